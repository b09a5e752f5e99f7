"""Claim, fencing and idempotent commits on both catalog backends (SQLite file, real Postgres)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update

from pisar.catalog import shards
from pisar.catalog.bulk import LineResult
from pisar.catalog.db import ensure_ready, get_engine
from pisar.catalog.models import Line, Shard, utcnow
from pisar.catalog.shards import RunFacts
from pisar.flags import Flag
from pisar.producer.campaigns import shards_to_resume
from pisar.producer.retry import RetrySelector, plan
from pisar.producer.submit import SubmitRequest, create_campaign
from pisar.settings import Settings
from tests.helpers.paths import lines_folder

if TYPE_CHECKING:
    from pisar.reader import ReaderCache
    from pisar.worker.outcomes import ShardOutcome

FACTS = RunFacts("cpu:float32", 0.1, 0.2)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        s = Settings(catalog_path=tmp_path / "catalog.db")
        ensure_ready(s.catalog_url, auto_upgrade=True)
        return s
    return Settings(database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def engines():  # one loaded test model for the runners of this module
    from pisar.reader import ReaderCache

    return ReaderCache("cpu")


@pytest.fixture
def campaign(settings: Settings, tiny_model: Path, print_lines: Path, tmp_path: Path):
    source = lines_folder(tmp_path, print_lines, 5)
    request = SubmitRequest(str(source), str(tiny_model), "store-test", shard_size=2, queue="q")
    created, listing = create_campaign(settings, request)
    assert created.shard_count == 3 and listing.keys == 5
    return created


def shard_ids(settings: Settings, campaign_id: int) -> list[int]:
    table = Shard.__table__
    with get_engine(settings.catalog_url).connect() as conn:
        return list(conn.execute(select(table.c.id).where(table.c.campaign_id == campaign_id).order_by(table.c.index)).scalars())


def ok_result(key: str, text: str) -> LineResult:
    return LineResult(
        key=key, status="ok", worker="test-worker", finished_at=utcnow(), text=text, confidence=0.9, min_token_prob=0.5, token_count=3
    )


def results_for(settings: Settings, shard_id: int, text: str) -> list[LineResult]:
    return [ok_result(key, text) for key in shards.lines_to_do(settings.catalog_url, shard_id)]


def test_second_delivery_waits_for_a_live_lease_and_is_skipped_once_done(settings: Settings, campaign) -> None:
    """A delivery that finds a live lease is told when that lease ends (it comes back then, in case the
    holder died); one that finds the shard done is a duplicate, counted."""
    first = shard_ids(settings, campaign.id)[0]
    held = shards.claim(settings.catalog_url, first, "w1", lease_seconds=60, max_attempts=3)
    assert isinstance(held, shards.Claim) and held.token == 1 and held.name == "store-test shard 0"
    busy = shards.claim(settings.catalog_url, first, "w2", lease_seconds=60, max_attempts=3)
    assert isinstance(busy, shards.Skipped) and (busy.holder, busy.name) == ("w1", "store-test shard 0")
    assert 55 < (busy.held_until - utcnow()).total_seconds() <= 60
    assert shards.finish(settings.catalog_url, held, results_for(settings, first, "a"), FACTS)
    assert shards.claim(settings.catalog_url, first, "w2", lease_seconds=60, max_attempts=3) == shards.Skipped(name="store-test shard 0")
    with get_engine(settings.catalog_url).connect() as conn:
        shard = conn.execute(select(Shard.__table__).where(Shard.__table__.c.id == first)).one()
    assert (shard.state, shard.duplicate_deliveries, shard.engine) == ("done", 1, "cpu:float32")


def test_shard_counters_follow_every_change_of_a_line_result(settings: Settings, campaign) -> None:
    """`status` sums per-shard counters; they must equal a count of the line rows after a commit,
    a commit that overwrites (a retry's new results) and a line set aside by the reaper."""
    from pisar.producer.campaigns import line_counts

    url = settings.catalog_url
    first, second, _ = shard_ids(settings, campaign.id)

    def counted() -> dict[str, int]:
        with get_engine(url).connect() as conn:
            rows = dict(conn.execute(select(Line.status, func.count()).where(Line.campaign_id == campaign.id).group_by(Line.status)).all())
            summed = line_counts(conn, campaign.id)[campaign.id]
        assert summed == {s: rows.get(s, 0) for s in ("pending", "ok", "error")}
        return summed

    assert counted() == {"pending": 5, "ok": 0, "error": 0}
    held = shards.claim(url, first, "w1", lease_seconds=60, max_attempts=3)
    rows = results_for(settings, first, "a")
    rows[0] = replace(rows[0], status="error", text=None, error_class="DecodeError", error="truncated")
    assert shards.finish(url, held, rows, FACTS)
    assert counted() == {"pending": 3, "ok": 1, "error": 1}
    shards.reopen(url, campaign.id, [first], reset_attempts=True, max_attempts=3)  # a retry asks for the shard again
    again = shards.claim(url, first, "w2", lease_seconds=60, max_attempts=3)
    assert shards.finish(url, again, [replace(r, status="ok", text="b", error_class=None, error=None) for r in rows], FACTS)
    assert counted() == {"pending": 3, "ok": 2, "error": 0}
    careful = shards.claim(url, second, "w3", lease_seconds=60, max_attempts=3)
    assert shards.probe(url, careful, shards.lines_to_do(url, second)[0])
    expire(settings, second)
    assert len(shards.expire_leases(url, max_attempts=3).poisoned) == 1
    assert counted() == {"pending": 2, "ok": 2, "error": 1}


def test_superseded_run_cannot_commit(settings: Settings, campaign) -> None:
    """Run A's lease expires, run B claims (new token): A's late commit is rejected, B's lands once."""
    url = settings.catalog_url
    first = shard_ids(settings, campaign.id)[0]
    run_a = shards.claim(url, first, "a", lease_seconds=60, max_attempts=3)
    table = Shard.__table__
    with get_engine(url).begin() as conn:
        conn.execute(update(table).where(table.c.id == first).values(lease_until=utcnow() - timedelta(seconds=1)))
    run_b = shards.claim(url, first, "b", lease_seconds=60, max_attempts=3)
    assert run_a is not None and run_b is not None and run_b.token == run_a.token + 1
    assert not shards.finish(url, run_a, results_for(settings, first, "from A"), FACTS)
    assert shards.finish(url, run_b, results_for(settings, first, "from B"), FACTS)
    lines = Line.__table__
    with get_engine(url).connect() as conn:
        rows = conn.execute(select(lines.c.text, func.count()).where(lines.c.shard_id == first).group_by(lines.c.text)).all()
        total = conn.execute(select(func.count()).select_from(lines).where(lines.c.campaign_id == campaign.id)).scalar_one()
    assert rows == [("from B", 2)]
    assert total == 5  # one row per line, nothing duplicated


def test_failures_retry_then_quarantine(settings: Settings, campaign) -> None:
    url = settings.catalog_url
    first = shard_ids(settings, campaign.id)[0]
    states = []
    for _ in range(3):
        held = shards.claim(url, first, "w", lease_seconds=60, max_attempts=3)
        assert held is not None
        states.append(shards.fail(url, held, "TransientError: S3 down", max_attempts=3))
    assert states == ["failed", "failed", "quarantined"]
    assert shards.claim(url, first, "w", lease_seconds=60, max_attempts=3) == shards.Skipped(name="store-test shard 0")
    assert first not in shards_to_resume(url, campaign.id)
    assert first in plan(url, campaign.id, RetrySelector()).shard_ids


def test_errored_lines_make_a_done_shard_retryable(settings: Settings, campaign) -> None:
    url = settings.catalog_url
    first, second = shard_ids(settings, campaign.id)[:2]
    for shard_id, status in ((first, "ok"), (second, "error")):
        held = shards.claim(url, shard_id, "w", lease_seconds=60, max_attempts=3)
        rows = [
            replace(r, status=status, error_class=None if status == "ok" else "NotAnImage") for r in results_for(settings, shard_id, "t")
        ]
        assert shards.finish(url, held, rows, FACTS)
    assert plan(url, campaign.id, RetrySelector()).shard_ids == [second]
    assert plan(url, campaign.id, RetrySelector(errors=("NotAnImage",))).shard_ids == [second]
    assert plan(url, campaign.id, RetrySelector(errors=("EmptyFile",))).shard_ids == []
    assert sorted(shards_to_resume(url, campaign.id)) == [shard_ids(settings, campaign.id)[2]]


def test_interrupted_run_releases_its_shard(settings: Settings, campaign) -> None:
    """Ctrl-C (or SystemExit) mid-shard hands the shard back at once instead of holding the lease."""
    from pisar.worker.runner import ShardRunner

    def interrupted(_ref, _dtype):  # a reader provider that is interrupted
        raise KeyboardInterrupt

    url = settings.catalog_url
    first = shard_ids(settings, campaign.id)[0]
    runner = ShardRunner(settings, interrupted, worker="w")
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(campaign.id, first)
    finally:
        runner.close()
    with get_engine(url).connect() as conn:
        shard = conn.execute(select(Shard.__table__).where(Shard.__table__.c.id == first)).one()
    assert (shard.state, shard.attempts, shard.lease_until) == ("queued", 0, None)
    assert first in shards_to_resume(url, campaign.id)
    again = shards.claim(url, first, "w2", lease_seconds=60, max_attempts=3)
    assert again is not None and again.token == 2 and again.attempts == 1


def test_status_figures_from_the_catalog(settings: Settings, campaign) -> None:
    """Throughput windows are clipped to the campaign's working time; errors are grouped with an example."""
    from pisar.producer.status import campaign_status

    url = settings.catalog_url
    base = utcnow() - timedelta(hours=1)
    line_times = iter([10, 20, 400, 500, 600])  # seconds after the first shard started
    table = Shard.__table__
    for index, shard_id in enumerate(shard_ids(settings, campaign.id)):
        held = shards.claim(url, shard_id, "w", lease_seconds=60, max_attempts=3)
        rows = [
            replace(
                r,
                finished_at=base + timedelta(seconds=next(line_times)),
                status="error" if index == 2 else "ok",
                error_class="EmptyFile" if index == 2 else None,
            )
            for r in results_for(settings, shard_id, "t")
        ]
        assert shards.finish(url, held, rows, FACTS)
        with get_engine(url).begin() as conn:
            conn.execute(update(table).where(table.c.id == shard_id).values(started_at=base, finished_at=max(r.finished_at for r in rows)))
    report = campaign_status(url, campaign)
    assert report.lines == {"pending": 0, "ok": 4, "error": 1}
    assert report.shards["done"] == 3 and report.finished
    assert report.lines_per_second_overall == pytest.approx(5 / 600)
    assert report.lines_per_second_recent == pytest.approx(3 / 300)  # the last 5 minutes of work, not of the clock
    assert report.error_classes == [{"error_class": "EmptyFile", "count": 1, "example_key": report.error_classes[0]["example_key"]}]
    assert report.eta_seconds == 0.0


def test_recent_throughput_counts_a_reruns_lines_not_its_whole_shard(settings: Settings, campaign) -> None:
    """A retry that re-reads one line of a two-line shard adds one line to the recent window, not two."""
    from pisar.producer.status import campaign_status

    url = settings.catalog_url
    table = Shard.__table__
    long_ago = utcnow() - timedelta(hours=1)
    ids = shard_ids(settings, campaign.id)
    for shard_id in ids:  # the whole campaign read an hour ago
        held = shards.claim(url, shard_id, "w", lease_seconds=60, max_attempts=3)
        assert shards.finish(url, held, results_for(settings, shard_id, "t"), FACTS)
    with get_engine(url).begin() as conn:
        conn.execute(update(table).where(table.c.campaign_id == campaign.id).values(started_at=long_ago, finished_at=long_ago))
    rerun = next(i for i in ids if len(results_for_all(settings, i)) == 2)
    shards.reopen(url, campaign.id, [rerun], reset_attempts=True, max_attempts=3)  # what `pisar retry` does, one line asked for
    held = shards.claim(url, rerun, "w", lease_seconds=60, max_attempts=3)
    assert shards.finish(url, held, results_for_all(settings, rerun)[:1], FACTS)
    report = campaign_status(url, campaign)
    assert report.lines == {"pending": 0, "ok": 5, "error": 0}  # the shard's counters still hold both lines
    assert report.lines_per_second_recent == pytest.approx(1 / 300)  # the window saw one line written


def results_for_all(settings: Settings, shard_id: int) -> list[LineResult]:
    """A result for every line of the shard, done or not (a rerun's lines)."""
    with get_engine(settings.catalog_url).connect() as conn:
        keys = conn.execute(select(Line.__table__.c.key).where(Line.__table__.c.shard_id == shard_id).order_by(Line.__table__.c.key))
        return [ok_result(key, "again") for (key,) in keys]


def test_status_counts_only_live_workers_and_recent_finishers(settings: Settings, campaign) -> None:
    """A worker killed mid-shard leaves a running shard whose lease expired: it is not "seen" any more."""
    from pisar.producer.status import campaign_status

    url = settings.catalog_url
    alive, dead, _ = shard_ids(settings, campaign.id)
    shards.claim(url, alive, "alive@host:1", lease_seconds=60, max_attempts=3)
    shards.claim(url, dead, "dead@host:2", lease_seconds=60, max_attempts=3)
    expire(settings, dead)
    report = campaign_status(url, campaign)
    assert report.workers_recent == ["alive@host:1"] and report.stale_leases == 1


def test_a_message_naming_the_wrong_campaign_runs_the_shard_of_its_own(settings: Settings, campaign, tiny_model: Path, engines) -> None:
    """Membership and campaign come from the catalog; the message's ids are only a pointer."""
    [outcome] = run_here(settings, engines, campaign.id + 999, shard_ids(settings, campaign.id)[0])
    assert (outcome.outcome, outcome.ok) == ("done", 2)


def lease_of(settings: Settings, shard_id: int):  # (state, lease_until, attempts, error)
    table = Shard.__table__
    with get_engine(settings.catalog_url).connect() as conn:
        return conn.execute(select(table.c.state, table.c.lease_until, table.c.attempts, table.c.error).where(table.c.id == shard_id)).one()


def expire(settings: Settings, shard_id: int) -> None:
    """What a killed worker leaves behind: a running shard whose lease nobody renews."""
    with get_engine(settings.catalog_url).begin() as conn:
        conn.execute(update(Shard.__table__).where(Shard.__table__.c.id == shard_id).values(lease_until=utcnow() - timedelta(seconds=1)))


def test_heartbeat_keeps_a_lease_alive_and_notices_when_it_is_taken(settings: Settings, campaign) -> None:
    from pisar.worker.lease import LeaseKeeper, LeaseLost

    first = shard_ids(settings, campaign.id)[0]
    held = shards.claim(settings.catalog_url, first, "w1", lease_seconds=10, max_attempts=3)
    claimed_until = lease_of(settings, first).lease_until
    with LeaseKeeper.for_shard(settings.catalog_url, held, lease_seconds=10, interval=0.1) as lease:
        import time

        time.sleep(0.5)
        assert lease_of(settings, first).lease_until > claimed_until  # renewed while running
        lease.check()  # still ours
        newer = None
        for _ in range(50):  # the live heartbeat (every 0.1 s) may renew between the expiry and the claim: try again
            expire(settings, first)
            newer = shards.claim(settings.catalog_url, first, "w2", lease_seconds=10, max_attempts=3)
            if newer is not None:
                break
        assert newer is not None and newer.token == held.token + 1
        assert lease.lost.wait(2.0)
        with pytest.raises(LeaseLost):
            lease.check()
    assert not shards.renew(settings.catalog_url, held, 10)  # the old token renews nothing
    assert shards.renew(settings.catalog_url, newer, 10)


def test_reaper_requeues_dead_workers_shards_then_quarantines(settings: Settings, campaign) -> None:
    first, second, _ = shard_ids(settings, campaign.id)
    live = shards.claim(settings.catalog_url, second, "alive", lease_seconds=60, max_attempts=2)
    for attempt in (1, 2):
        held = shards.claim(settings.catalog_url, first, f"killed-{attempt}", lease_seconds=60, max_attempts=2)
        assert held is not None and held.attempts == attempt
        expire(settings, first)
        reaped = shards.expire_leases(settings.catalog_url, max_attempts=2)
        state, lease_until, attempts, error = lease_of(settings, first)
        assert lease_until is None and attempts == attempt
        if attempt == 1:
            assert reaped.returned == [first] and state == "pending"  # back in line: the feeder publishes it
        else:  # no third run of a shard that killed two workers
            assert reaped.quarantined == [first] and not reaped.returned and state == "quarantined"
            assert "WorkerLost" in error and "killed-2" in error
    assert lease_of(settings, second).state == "running" and live is not None  # a live lease is never reaped
    assert not shards.expire_leases(settings.catalog_url, max_attempts=2).returned


def test_a_redelivery_that_beats_the_reaper_takes_over_the_way_the_reaper_would(settings: Settings, campaign) -> None:
    """Celery redelivers a dead worker's message at once; when it arrives before the reaper's pass,
    the claim must still run the shard line by line and set aside the line the last run died on.
    (Before, it took the shard as a fresh attempt in batches: a poison line then crashed the worker
    again and the shard was quarantined at max attempts 2, the chaos suite's one flaky failure.)"""
    first = shard_ids(settings, campaign.id)[0]
    url = settings.catalog_url
    held = shards.claim(url, first, "crashed-in-a-batch", lease_seconds=60, max_attempts=2)
    assert held is not None and not held.suspect
    expire(settings, first)  # the worker died; no reaper ran
    careful = shards.claim(url, first, "redelivered", lease_seconds=60, max_attempts=2)
    assert careful is not None and careful.suspect and careful.attempts == 2
    poison = shards.lines_to_do(url, first)[0]
    assert shards.probe(url, careful, poison)
    expire(settings, first)  # it died again, on the line it had just recorded
    finishing = shards.claim(url, first, "redelivered-again", lease_seconds=60, max_attempts=2)
    assert finishing is not None and finishing.suspect and finishing.attempts == 2  # a named crash spends no attempt
    assert poison not in shards.lines_to_do(url, first)
    with get_engine(url).connect() as conn:
        line = conn.execute(select(Line.__table__).where(Line.__table__.c.key == poison)).one()
    assert (line.status, line.error_class) == ("error", "WorkerCrash")


def run_here(settings: Settings, engines: ReaderCache, campaign_id: int, shard_id: int, times: int = 1) -> list[ShardOutcome]:
    """Run one shard ``times`` in this process, as a worker would, through the real ``ShardRunner``."""
    from pisar.worker.runner import ShardRunner

    runner = ShardRunner(settings, engines.get, worker="w")
    try:
        return [runner.run(campaign_id, shard_id) for _ in range(times)]
    finally:
        runner.close()


def shard_row(settings: Settings, shard_id: int):  # the shard's row
    with get_engine(settings.catalog_url).connect() as conn:
        return conn.execute(select(Shard.__table__).where(Shard.__table__.c.id == shard_id)).one()


def raising(exc: BaseException):  # a stand-in for shards.finish
    def commit(*_args: object, **_kwargs: object) -> bool:
        raise exc

    return commit


def db_error(kind: type, driver_error: Exception):  # a SQLAlchemy DBAPIError as the driver raises it
    return kind("INSERT INTO line ...", {}, driver_error)


@pytest.mark.parametrize(
    ("fault", "outcome", "state", "attempts"),
    [
        (lambda: RuntimeError("a bug in the commit"), "failed", "failed", 1),
        (lambda: db_error(sa_exc.IntegrityError, psycopg.errors.UniqueViolation("duplicate key")), "failed", "failed", 1),
        (lambda: db_error(sa_exc.DataError, psycopg.errors.CharacterNotInRepertoire("invalid byte")), "failed", "failed", 1),
        (lambda: db_error(sa_exc.OperationalError, psycopg.OperationalError("connection refused")), "stalled", "queued", 0),
        (lambda: db_error(sa_exc.OperationalError, psycopg.errors.QueryCanceled("statement timeout")), "stalled", "queued", 0),
        (lambda: TimeoutError("timed out"), "stalled", "queued", 0),
    ],
    ids=["bug", "IntegrityError", "DataError", "connection-refused", "statement-timeout", "socket-timeout"],
)
def test_a_commit_that_raises_ends_in_a_recorded_state(
    settings: Settings,
    campaign,
    monkeypatch: pytest.MonkeyPatch,
    fault,
    outcome: str,
    state: str,
    attempts: int,
    engines,
) -> None:
    """A deterministic error fails the shard (an attempt spent, retried, quarantined at the last); an
    outage releases it with the attempt refunded. Nothing is left running behind a live worker."""
    first = shard_ids(settings, campaign.id)[0]
    monkeypatch.setattr(shards, "finish", raising(fault()))
    [result] = run_here(settings, engines, campaign.id, first)
    row = shard_row(settings, first)
    assert (result.outcome, row.state, row.attempts, row.lease_until) == (outcome, state, attempts, None)
    if outcome == "failed":
        assert row.error.startswith(type(fault()).__name__) and result.resend_after(settings) == 5  # retried with backoff
    else:
        assert result.resend_after(settings) == settings.outage_retry_seconds


def test_the_last_failed_attempt_quarantines(settings: Settings, campaign, monkeypatch: pytest.MonkeyPatch, engines) -> None:
    first = shard_ids(settings, campaign.id)[0]
    monkeypatch.setattr(shards, "finish", raising(RuntimeError("a bug in the commit")))
    outcomes = [r.outcome for r in run_here(settings.model_copy(update={"max_attempts": 2}), engines, campaign.id, first, times=3)]
    assert outcomes == ["failed", "quarantined", "skipped"]
    assert shard_row(settings, first).state == "quarantined"


def test_a_node_that_cannot_serve_gives_the_shard_back_and_takes_no_more(settings: Settings, campaign) -> None:
    """FatalError (no device, a model that will not load) is the node's: the shard goes back unspent,
    and the runner refuses every later shard without claiming it."""
    from pisar.errors import FatalError
    from pisar.worker.runner import ShardRunner

    def no_device(_ref, _dtype):  # a reader provider on a node without its GPU
        raise FatalError("PISAR_DEVICE=cuda but no CUDA device is visible")

    first, second, _ = shard_ids(settings, campaign.id)
    runner = ShardRunner(settings, no_device, worker="broken")
    try:
        gave_back = runner.run(campaign.id, first)
        refused = runner.run(campaign.id, second)
    finally:
        runner.close()
    assert (gave_back.outcome, gave_back.resend_after(settings)) == ("broken", 0)
    assert (shard_row(settings, first).state, shard_row(settings, first).attempts) == ("queued", 0)
    assert refused.outcome == "broken" and shard_row(settings, second).state == "pending"  # never claimed


def test_texts_no_catalog_can_hold_are_stored_alike_in_both_backends(settings: Settings, campaign) -> None:
    """A byte-level decoder can emit NUL (Postgres refuses it) and a Python one a lone surrogate (no
    backend encodes it): both become U+FFFD, flagged, the same in SQLite and Postgres."""
    url = settings.catalog_url
    first = shard_ids(settings, campaign.id)[0]
    held = shards.claim(url, first, "w", lease_seconds=60, max_attempts=3)
    keys = shards.lines_to_do(url, first)
    results = [
        replace(ok_result(keys[0], "a\x00b\ud800c"), flags=(Flag.MAX_LENGTH,), error=None),
        replace(ok_result(keys[1], "plain \x1b text"), note="read \x00 as is"),
    ]
    assert shards.finish(url, held, results, FACTS)
    with get_engine(url).connect() as conn:
        rows = {r.key: r for r in conn.execute(select(Line.__table__).where(Line.__table__.c.shard_id == first))}
    assert (rows[keys[0]].text, rows[keys[0]].flags) == ("a\ufffdb\ufffdc", "max_length,unstorable_text")
    assert (rows[keys[1]].text, rows[keys[1]].flags, rows[keys[1]].note) == ("plain \x1b text", None, "read \ufffd as is")


def test_without_the_replacement_postgres_refuses_a_nul_and_the_shard_fails(
    settings: Settings, campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault of issue 17, on the real server: COPY refuses NUL with a DataError inside the commit.
    The shard fails with that message and is retried, instead of staying running under its lease."""
    if not settings.catalog_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL as it is")
    from pisar.catalog.bulk import LineResult
    from pisar.reader import ReaderCache, register_backend
    from tests.helpers.reader_backends import nul_tail

    monkeypatch.setattr(LineResult, "storable", lambda self: self)  # what PISAR_TEST_KEEP_UNSTORABLE does in a worker
    register_backend("nul-tail", nul_tail)  # every reading ends in NUL
    first = shard_ids(settings, campaign.id)[0]
    [result] = run_here(settings, ReaderCache("cpu", backend="nul-tail"), campaign.id, first)
    row = shard_row(settings, first)
    assert (result.outcome, row.state, row.attempts, row.lease_until) == ("failed", "failed", 1, None)
    assert row.error.startswith("DataError") and "NUL" in row.error
