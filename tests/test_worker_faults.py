"""Faults injected around a running campaign, on real SeaweedFS, Redis, Postgres and Celery worker subprocesses.

Each campaign is 120 real scans. Each test asserts at the end that every line has exactly one row,
that the texts equal a fault-free reading of the same lines (``tests.chaos.FaultFree``), that shard
states are final, and that the fault shows in the catalog where it should (attempts, errors).

- SIGKILL, twice, at two points of a shard: the lease expires, `pisar feed` re-queues the shard,
  another worker finishes it, and every line is written exactly once.
- SIGKILL of one worker's pool process: its shard's own redelivered message waits for the lease to
  end and takes the shard back, with no feeder as with one.
- A Redis visibility timeout shorter than a shard: Redis redelivers running shards; the redelivery
  waits for the lease, then finds the shard done and is skipped: nothing runs twice.
- SIGTERM: warm shutdown finishes the running shard; nothing is left half-written or leased.
- A line that kills the worker process (a simulated native crash, ``tests/crash_hook``) is found by
  running its shard line by line, set aside as ``WorkerCrash``, and the rest of the shard finishes.
- The same campaign submitted twice and every shard published twice: refused, then skipped.
- Redis (with a password) killed and restarted mid-campaign, with AOF and without persistence, or flushed.
- Postgres unreachable for 10 s, and SeaweedFS killed and restarted: work stalls, nothing fails.
- Hostile files mixed into the campaign: each gets its outcome, the workers live, the real lines are read as always.

Worker "slowness" and native crashes are injected by ``tests/helpers/fault_hooks`` (a ``sitecustomize`` on
the worker's PYTHONPATH): there is no GPU here to be slow, and no decoder that segfaults on demand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers.chaos import LINES as LINE_TABLE
from tests.helpers.chaos import SHARDS, FaultFree, now, submit
from tests.helpers.cli import PISAR, run_pisar, wait_until

pytestmark = pytest.mark.chaos

LINES = 120
SHARD_SIZE = 60
# seconds: the heartbeat renews every ~3 s, so a dead worker's lease expires within 10 s. The production
# lease (60 s) can be measured with PISAR_CHAOS_LEASE_SECONDS=60 (docs/reliability.md, fault 2b).
LEASE = int(os.environ.get("PISAR_CHAOS_LEASE_SECONDS", "10"))
HOOKS = Path(__file__).parent / "helpers" / "fault_hooks"


@pytest.fixture(scope="module")
def fault_free(tiny_model: Path, print_lines: Path) -> FaultFree:
    """The campaign's 120 real lines and their texts read without faults (once per module; cached on disk)."""
    return FaultFree(tiny_model, print_lines, LINES)


def with_hooks(env: dict[str, str], **hooks: str) -> dict[str, str]:
    """``env`` for a worker that loads ``tests/helpers/fault_hooks`` with the given ``PISAR_TEST_*`` switches."""
    path = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")]))
    return {**env, **{f"PISAR_TEST_{name.upper()}": value for name, value in hooks.items()}, "PYTHONPATH": path}


def start_reaper(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PISAR, "feed"], env={**env, "PISAR_REAP_INTERVAL_SECONDS": "1"}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def running_shard_of(campaign, worker: str):  # Watched -> row or None
    with campaign.engine.connect() as conn:
        query = select(SHARDS).where(SHARDS.c.state == "running", SHARDS.c.worker.startswith(worker))
        return conn.execute(query).first()


# The longest scenarios first: xdist hands them out in this order, so none starts last and runs alone.
def test_seaweedfs_restarted_mid_campaign_stalls_work_and_fails_nothing(
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """The object store is killed (SIGKILL) for 5 s and started again on its data while a worker reads."""

    from infra.local_services import start_seaweedfs

    weed = start_seaweedfs(tmp_path / "weed")
    try:
        env = {**distributed_env, **weed.env, "PISAR_OUTAGE_RETRY_SECONDS": "2", "PISAR_BATCH_SIZE": "4", "PISAR_LEASE_SECONDS": str(LEASE)}
        s3 = weed.s3_client()
        shard_size = 10
        campaign = submit(s3, env, "weed-restart", fault_free.objects(), tiny_model, shard_size)
        worker = start_worker(with_hooks(env, slow_batch_seconds="0.5"), "reader")  # ~1.5 s a shard: ten outlast the outage
        wait_until(lambda: campaign.done() >= 2, 180, "two shards done before the restart")
        killed_at = now()
        os.killpg(weed.proc.pid, signal.SIGKILL)
        weed.proc.wait()
        time.sleep(5)
        weed = start_seaweedfs(tmp_path / "weed", weed.ports)
        wait_until(lambda: campaign.done() == LINES // shard_size, 300, "every shard done after the restart")
        assert worker.poll() is None
    finally:
        weed.stop()
    campaign.report("seaweedfs-restart", LINES, killed_at, outage_s=5)
    fault_free.assert_read_whole(campaign)  # no line was marked failed for the store's absence
    with campaign.engine.connect() as conn:
        assert conn.execute(select(func.max(SHARDS.c.attempts))).scalar_one() == 1  # and no shard spent an attempt on it


def test_a_line_that_crashes_the_worker_is_set_aside_and_the_rest_finishes(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    from tests.helpers.fault_hooks.sitecustomize import MARKER

    env = with_hooks({**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_MAX_ATTEMPTS": "2"}, crash_hook="1")
    objects = fault_free.objects()
    poison = sorted(objects)[7]
    objects[poison] += MARKER  # still a valid PNG: the bytes after IEND are ignored by decoders
    campaign = submit(s3, env, "poison", objects, tiny_model, SHARD_SIZE)
    worker = start_worker(env, "crashy")
    reaper = start_reaper(env, tmp_path / "reaper.log")
    try:
        wait_until(lambda: campaign.states() == {"done": LINES // SHARD_SIZE}, 240, "both shards done despite the crashing line")
    except AssertionError as exc:  # say where it stuck: shard states and both logs
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(encoding='utf-8')[-3000:]}" for p in (tmp_path / "reaper.log", tmp_path / "crashy.log")
        )
        raise AssertionError(f"{exc}; shards {campaign.states()}\n{logs}") from None
    finally:
        stop(reaper)
    assert worker.poll() is None  # Celery replaced the dead child; the worker lives on
    with campaign.engine.connect() as conn:
        rows = {r.key: r for r in conn.execute(select(LINE_TABLE)).all()}
        poisoned_shard = conn.execute(select(SHARDS).where(SHARDS.c.id == rows[poison].shard_id)).one()
    assert (rows[poison].status, rows[poison].error_class) == ("error", "WorkerCrash")
    assert all(r.status == "ok" and r.text for k, r in rows.items() if k != poison)  # the rest of its shard finished
    campaign.report("poison-line", LINES, attempts=poisoned_shard.attempts, worker_crash_lines=1)
    campaign.assert_every_line_once(LINES)
    # Attempt 1 died in a batch (line unknown); attempt 2, line by line, died on the poison and named it
    # without spending the attempt; attempt 2 again finished the rest: never quarantined at max 2.
    assert poisoned_shard.attempts == 2 and poisoned_shard.probe_key is None
    assert f"set aside {poison}" in (tmp_path / "reaper.log").read_text(encoding="utf-8")
    fault_free.assert_same_texts(campaign.texts(), leave_out=frozenset({poison}))


def test_postgres_unreachable_for_ten_seconds_stalls_work_and_fails_nothing(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """Every connection to the catalog is reset and refused for 10 s while the worker commits."""
    from sqlalchemy.engine import make_url

    from tests.helpers.tcp_proxy import CuttableProxy

    direct = make_url(distributed_env["PISAR_DATABASE_URL"])
    proxy = CuttableProxy(direct.port or 5432, direct.host or "127.0.0.1")
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_OUTAGE_RETRY_SECONDS": "2", "PISAR_BATCH_SIZE": "4"}
    shard_size = 10
    campaign = submit(s3, env, "pg-outage", fault_free.objects(), tiny_model, shard_size)
    slow = with_hooks({**env, "PISAR_DATABASE_URL": proxied}, slow_batch_seconds="0.5")  # ~1.5 s a shard: ten outlast the outage
    worker = start_worker(slow, "cut-off")
    reaper = start_reaper(env, tmp_path / "reaper.log")
    try:
        wait_until(lambda: campaign.done() >= 2, 180, "two shards done before the outage")
        cut_at = now()
        proxy.cut()
        time.sleep(10)
        proxy.restore()
        try:
            wait_until(lambda: campaign.done() == LINES // shard_size, 240, "every shard done after the outage")
        except AssertionError as exc:  # say where it stuck: shard states and the worker's last words
            tail = (tmp_path / "cut-off.log").read_text(encoding="utf-8").splitlines()[-15:]
            raise AssertionError(f"{exc}; shards {campaign.states()}; worker log:\n" + "\n".join(tail)) from None
    finally:
        stop(reaper)
        proxy.close()
    assert worker.poll() is None
    campaign.report("postgres-10s-outage", LINES, cut_at, outage_s=10)
    fault_free.assert_read_whole(campaign)  # the outage failed no line
    assert campaign.states() == {"done": LINES // shard_size}  # and no shard
    assert "catalog unreachable" in (tmp_path / "cut-off.log").read_text(encoding="utf-8")  # the outage really hit the worker


def test_sigterm_with_a_shard_longer_than_the_stop_timeout_gives_it_back_in_time(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
) -> None:
    """`docker stop` / a Kubernetes scale-down: the shard cannot finish within the grace period, so the
    worker hands it back before the platform's SIGKILL would, and another worker takes it at once."""
    stop_timeout = 10  # seconds: the container's grace period; the shard is given back 9 s after SIGTERM
    env = {**distributed_env, "PISAR_BATCH_SIZE": "1", "PISAR_STOP_TIMEOUT_SECONDS": str(stop_timeout)}
    campaign = submit(s3, env, "stoptimeout", fault_free.objects(), tiny_model, SHARD_SIZE)
    # 60 batches: ~30 s a shard, three times the grace period, checked every 0.5 s. The model is preloaded
    # (PISAR_MODEL, as a deployment sets it): loading it can take longer than the grace period on a loaded
    # 2-core machine, and no check can interrupt it (a stop during a load gives the shard back right after).
    slow = with_hooks({**env, "PISAR_MODEL": str(tiny_model)}, slow_batch_seconds="0.5")
    worker = start_worker(slow, "leaving")
    wait_until(lambda: running_shard_of(campaign, "leaving") is not None, 120, "the worker to start a shard", interval=0.05)
    held = running_shard_of(campaign, "leaving").id
    signalled = now()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    exit_s = (now() - signalled).total_seconds()
    with campaign.engine.connect() as conn:
        row = conn.execute(select(SHARDS).where(SHARDS.c.id == held)).one()
        written = conn.execute(select(func.count()).where(LINE_TABLE.c.shard_id == held, LINE_TABLE.c.status != "pending")).scalar_one()
    assert (row.state, row.lease_until, row.attempts, written) == ("queued", None, 0, 0)  # back, attempt not spent, nothing half
    released_s = (row.queued_at - signalled).total_seconds()
    assert released_s < stop_timeout, released_s  # given back before the platform's SIGKILL at the end of the grace period

    resumed_at = now()
    start_worker(env, "taker")  # the message was sent again: no lease to wait out, no reaper needed
    wait_until(lambda: campaign.states() == {"done": LINES // SHARD_SIZE}, 180, "every shard done")
    with campaign.engine.connect() as conn:
        row = conn.execute(select(SHARDS).where(SHARDS.c.id == held)).one()
    assert (row.attempts, row.worker.split("@")[0]) == (1, "taker")
    campaign.report(
        "stop-timeout",
        LINES,
        signalled,
        worker_exit_s=round(exit_s, 1),
        released_s=round(released_s, 1),
        taken_again_s=round((row.started_at - resumed_at).total_seconds(), 1),
    )
    fault_free.assert_read_whole(campaign)


def test_workers_killed_at_two_points_of_a_shard_lose_nothing(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """SIGKILL (a preempted node) right after a claim, and again deep into another shard's generation."""
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_BATCH_SIZE": "4"}
    shard_size = 30  # 4 shards, 8 batches each
    campaign = submit(s3, env, "reap", fault_free.objects(), tiny_model, shard_size)
    slow = with_hooks(env, slow_batch_seconds="1.3")  # ~11 s a shard: time to kill it mid-way

    early = start_worker(slow, "victim-early")
    wait_until(lambda: running_shard_of(campaign, "victim-early") is not None, 120, "a first claim", interval=0.05)
    killed_at = now()
    os.killpg(early.pid, signal.SIGKILL)  # no warm shutdown, no release: what a preempted node does
    early.wait()

    late = start_worker(slow, "victim-late")

    def renewed_twice() -> bool:  # the heartbeat renews every LEASE/3 s: two renewals = ~7 s into the shard
        row = running_shard_of(campaign, "victim-late")
        return row is not None and (row.lease_until - row.started_at).total_seconds() > LEASE + LEASE / 2

    wait_until(renewed_twice, 120, "the second victim to be deep into its shard", interval=0.1)
    os.killpg(late.pid, signal.SIGKILL)
    late.wait()
    with campaign.engine.connect() as conn:
        orphans = conn.execute(select(SHARDS.c.id, SHARDS.c.worker).where(SHARDS.c.state == "running")).all()
    assert sorted(w.split("@")[0] for _, w in orphans) == ["victim-early", "victim-late"]

    start_worker(env, "survivor")
    reaper = start_reaper(env, tmp_path / "reaper.log")  # re-queues each orphan once its lease has expired
    try:
        wait_until(lambda: campaign.states() == {"done": LINES // shard_size}, 240, "every shard done")
    finally:
        stop(reaper)
    with campaign.engine.connect() as conn:
        shards = {r.id: r for r in conn.execute(select(SHARDS)).all()}
    for orphan_id, _ in orphans:  # the fault shows: two runs, finished by the survivor
        assert (shards[orphan_id].attempts, shards[orphan_id].worker.split("@")[0]) == (2, "survivor")
    assert sorted(r.attempts for r in shards.values()) == [1, 1, 2, 2]
    assert "reaped 1 shards back in line" in (tmp_path / "reaper.log").read_text(encoding="utf-8")
    campaign.report("kill-9-twice", LINES, killed_at, attempts=sorted(r.attempts for r in shards.values()))
    fault_free.assert_read_whole(campaign)


@pytest.mark.parametrize("feeder", [False, True], ids=["no-feeder", "feeder"])
def test_a_killed_pool_process_s_shard_comes_back_with_or_without_a_feeder(
    feeder: bool,
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """One worker's pool process SIGKILLed mid-shard (the OOM killer, a native crash), two workers, shards of 8.

    Celery redelivers the shard's only message at once (reject on worker lost); the claim finds the
    dead process's lease still live and, instead of dropping the message, sends it back for when the
    lease ends. Then it is claimed: the campaign finishes with no feeder at all, and with one the
    reaper and the message race harmlessly. Every line once, every text as without the fault.
    """
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_BATCH_SIZE": "4"}
    objects = subset(fault_free, 64)
    campaign = submit(s3, env, "killed-child" + ("-fed" if feeder else ""), objects, tiny_model, 8)
    slow = with_hooks(env, slow_batch_seconds="1.0")  # ~2 s a shard
    victim = start_worker(slow, "victim")
    start_worker(slow, "other")
    reaper = start_reaper(env, tmp_path / "reaper.log") if feeder else None
    try:
        wait_until(lambda: campaign.done() >= 1 and running_shard_of(campaign, "victim") is not None, 120, "the victim mid-shard", 0.05)
        row = running_shard_of(campaign, "victim")
        child = int(row.worker.rsplit(":", 1)[1])  # the runner's identity is host:pid of its pool process
        killed_at = now()
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: campaign.states() == {"done": len(objects) // 8}, 180, "every shard done")
    finally:
        if reaper is not None:
            stop(reaper)
    assert victim.poll() is None  # Celery replaced its pool process; the worker lives on
    with campaign.engine.connect() as conn:
        orphan = conn.execute(select(SHARDS).where(SHARDS.c.id == row.id)).one()
    recovered_s = (orphan.finished_at - killed_at).total_seconds()
    assert orphan.attempts == 2 and recovered_s < LEASE + 30, (orphan.attempts, recovered_s)
    campaign.report(f"kill-pool-process-{'feeder' if feeder else 'no-feeder'}", len(objects), killed_at, recovered_s=round(recovered_s, 1))
    campaign.assert_every_line_once(len(objects))
    fault_free.assert_same_texts(campaign.texts())


def test_a_visibility_timeout_shorter_than_a_shard_runs_nothing_twice(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
) -> None:
    """Redis redelivers a shard still running after 10 s (celery #5935); its lease makes the redelivery wait, then a no-op."""
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_VISIBILITY_TIMEOUT_SECONDS": str(LEASE), "PISAR_BATCH_SIZE": "4"}
    campaign = submit(s3, env, "visibility", fault_free.objects(), tiny_model, SHARD_SIZE)
    slow = with_hooks(env, slow_batch_seconds="1.4")  # 15 batches: ~21 s a shard, twice the visibility timeout
    start_worker(slow, "w1")
    start_worker(slow, "w2")

    def skipped() -> int:
        with campaign.engine.connect() as conn:
            return conn.execute(select(func.sum(SHARDS.c.duplicate_deliveries))).scalar_one()

    # Both shards outlive the timeout, so each message comes back once while its shard runs; a free
    # worker takes it, finds a live lease and sends it back for when the lease ends (its holder may
    # have died), and that last delivery finds the shard done and is skipped, once per shard.
    wait_until(
        lambda: campaign.states() == {"done": LINES // SHARD_SIZE} and skipped() == LINES // SHARD_SIZE, 180, "both redeliveries skipped"
    )
    with campaign.engine.connect() as conn:
        shards = conn.execute(select(SHARDS)).all()
    assert all(r.attempts == 1 for r in shards)  # redelivered, never re-run
    assert all((r.finished_at - r.started_at).total_seconds() > LEASE for r in shards)  # each really outlived the timeout
    campaign.report("visibility-timeout", LINES, redeliveries_skipped=skipped(), attempts=[r.attempts for r in shards])
    fault_free.assert_read_whole(campaign)


def test_sigterm_finishes_the_running_shard_and_writes_nothing_half(
    s3, distributed_env, start_worker, tiny_model: Path, fault_free: FaultFree
) -> None:
    env = {**distributed_env, "PISAR_BATCH_SIZE": "2"}
    campaign = submit(s3, env, "term", fault_free.objects(), tiny_model, SHARD_SIZE)
    worker = start_worker(env, "stopping")
    wait_until(lambda: campaign.states().get("running", 0) == 1, 120, "the worker to start a shard", interval=0.05)
    signalled = now()
    worker.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send first
    assert worker.wait(timeout=120) == 0
    exit_s = (now() - signalled).total_seconds()
    with campaign.engine.connect() as conn:
        shard_rows = conn.execute(select(SHARDS.c.id, SHARDS.c.state, SHARDS.c.line_count)).all()
        written = select(LINE_TABLE.c.shard_id, func.count()).where(LINE_TABLE.c.status != "pending").group_by(LINE_TABLE.c.shard_id)
        by_shard = dict(conn.execute(written).all())
    assert "running" not in {r.state for r in shard_rows}  # nothing left holding a lease
    assert "done" in {r.state for r in shard_rows}  # the shard it was running was finished, not dropped
    for row in shard_rows:  # a shard is written whole or not at all
        assert by_shard.get(row.id, 0) == (row.line_count if row.state == "done" else 0)
    fault_free.assert_same_texts({k: t for k, t in campaign.texts().items() if t is not None})  # and written right
    campaign.report("sigterm", LINES, signalled, worker_exit_s=round(exit_s, 1), half_written_shards=0)


def test_a_campaign_submitted_twice_and_published_twice_is_written_once(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
) -> None:
    env = distributed_env
    campaign = submit(s3, env, "twice", fault_free.objects(), tiny_model, SHARD_SIZE)
    again = run_pisar(["submit", "s3://twice/vol", "--model", str(tiny_model), "--name", "twice"], env)  # a double click
    assert again.returncode != 0 and "campaign 'twice' already exists" in again.stderr
    resumed = run_pisar(["resume", "twice"], env)  # every shard published a second time while still queued
    assert resumed.returncode == 0 and f"{LINES // SHARD_SIZE} shards not done" in resumed.stderr

    seen: list[tuple[dict, int]] = []  # the last look, for the failure message

    def finished() -> bool:
        with campaign.engine.connect() as conn:
            skipped = conn.execute(select(func.sum(SHARDS.c.duplicate_deliveries))).scalar_one()
        seen[:] = [(campaign.states(), skipped)]
        return seen[0][0] == {"done": LINES // SHARD_SIZE} and skipped == LINES // SHARD_SIZE

    start_worker(env, "w1")
    start_worker(env, "w2")
    try:
        wait_until(finished, 180, "every shard done and every second message skipped")
    except AssertionError as exc:  # say which half never came: the shards, or the second deliveries
        raise AssertionError(f"{exc}; last seen: states {seen[0][0]}, duplicate deliveries {seen[0][1]}") from None
    with campaign.engine.connect() as conn:
        attempts = {a for (a,) in conn.execute(select(SHARDS.c.attempts)).all()}
    campaign.report("submitted-and-published-twice", LINES, duplicates_skipped=LINES // SHARD_SIZE, attempts=sorted(attempts))
    fault_free.assert_read_whole(campaign)
    assert attempts == {1}  # each shard ran once; its duplicate was skipped, not re-run


@pytest.mark.parametrize(
    ("aof", "fault"), [(True, "restart"), (False, "restart"), (True, "flushall")], ids=["aof", "no-persistence", "flushall"]
)
def test_redis_restarted_mid_campaign_loses_nothing(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
    aof: bool,
    fault: str,
) -> None:
    """Redis killed (SIGKILL) and restarted on the same port while a worker runs, or flushed; with a password.

    With AOF the queue survives a restart and the campaign finishes by itself; without persistence,
    or after FLUSHALL, the queue is gone and `pisar resume` re-publishes from the catalog. Every line once.
    """
    from infra.local_services import start_redis

    redis = start_redis(tmp_path / "redis", aof=aof, password="s3cret-pw")
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    env = {**distributed_env, "PISAR_REDIS_URL": redis.url, "PISAR_BATCH_SIZE": "4"}
    name, shard_size = f"redis-{fault}-{'aof' if aof else 'plain'}", 20
    campaign = submit(s3, env, name, fault_free.objects(), tiny_model, shard_size)
    try:
        worker = start_worker(with_hooks(env, slow_batch_seconds="0.5"), "steady")  # ~2.5 s a shard: five left at the fault
        wait_until(lambda: campaign.done() >= 1, 180, "a first shard done")
        fault_at = now()
        if fault == "flushall":
            import redis as redis_client

            redis_client.Redis.from_url(redis.url).flushall()
        else:
            time.sleep(1.5)  # AOF fsyncs every second
            redis.proc.kill()  # SIGKILL: no final save
            redis.proc.wait()
            redis = start_redis(tmp_path / "redis", port, aof=aof, password="s3cret-pw")
        if not aof or fault == "flushall":
            resumed = run_pisar(["resume", name], env)
            assert resumed.returncode == 0, resumed.stderr
        wait_until(lambda: campaign.done() == LINES // shard_size, 240, "every shard done after the restart")
        assert worker.poll() is None  # the worker reconnected rather than dying
    finally:
        redis.stop()
    campaign.report(f"redis-{fault}-{'aof' if aof else 'no-persistence'}", LINES, fault_at, resume_needed=not aof or fault == "flushall")
    # The broker password is in no log line (Celery's banner and reconnect warnings mask it) and nowhere in the catalog.
    assert "s3cret-pw" not in (tmp_path / "steady.log").read_text(encoding="utf-8") + campaign.dump()
    fault_free.assert_read_whole(campaign)


def test_hostile_files_mixed_into_a_campaign_get_their_outcomes_and_kill_no_worker(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """Bombs, truncations, non-images, odd modes, multi-frame files and odd shapes among 120 real lines."""
    from PIL import Image

    from tests.helpers.hostile import extreme_shapes, hostile_files, rotated_by_exif, variants

    first, line = sorted(fault_free.paths.values())[0], Image.open(sorted(fault_free.paths.values())[3])
    failing = {f"vol/hostile/{name}": (data, error_class) for name, (data, error_class) in hostile_files(first).items()}
    readable = {
        f"vol/odd/{name}": data for name, data in {**variants(line), "exif-rotated.jpg": rotated_by_exif(line), **extreme_shapes()}.items()
    }
    objects = {**fault_free.objects(), **{key: data for key, (data, _) in failing.items()}, **readable}
    campaign = submit(s3, distributed_env, "hostile", objects, tiny_model, 50)
    s3.delete_object(Bucket="hostile", Key="vol/hostile/missing.png")  # listed, then gone
    workers = [start_worker(distributed_env, "h1"), start_worker(distributed_env, "h2")]
    wait_until(lambda: set(campaign.states()) == {"done"}, 300, "every shard done")  # three folders: three key ranges

    assert all(w.poll() is None for w in workers)
    for name in ("h1", "h2"):  # no pool child died and was replaced either
        log = (tmp_path / f"{name}.log").read_text(encoding="utf-8")
        assert "exited prematurely" not in log and "WorkerLostError" not in log, log[-2000:]
    campaign.report("hostile-files", len(objects), hostile=len(failing), odd_but_readable=len(readable))
    campaign.assert_every_line_once(len(objects))
    with campaign.engine.connect() as conn:
        rows = {r.key: r for r in conn.execute(select(LINE_TABLE)).all()}
        attempts = {a for (a,) in conn.execute(select(SHARDS.c.attempts)).all()}
    assert attempts == {1}  # a bad file is a line's outcome, never its shard's failure
    for key, (_, error_class) in failing.items():
        assert (rows[key].status, rows[key].error_class) == ("error", error_class), key
        assert rows[key].error, key
    for key in readable:
        assert rows[key].status == "ok" and rows[key].text is not None, key
    notes = {key.rsplit("/", 1)[1]: rows[key].note for key in readable}
    assert notes["animated.gif"] == "first of 2 frames (GIF)" and notes["multipage.tif"] == "first of 2 frames (TIFF)"
    assert notes["exif-rotated.jpg"] == "EXIF orientation 6 applied"
    assert notes["rgba-transparent-page.png"] == "transparency composited on white"
    fault_free.assert_same_texts({k: r.text for k, r in rows.items() if k in fault_free.paths})


def subset(fault_free: FaultFree, count: int) -> dict[str, bytes]:
    """The first ``count`` of the campaign's lines: the lifecycle faults need a few shards, not all the lines."""
    return dict(sorted(fault_free.objects().items())[:count])


def test_a_commit_the_catalog_refuses_fails_its_shard_then_quarantines_it(
    s3,
    distributed_env,
    start_worker,
    byte_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """Issue 17's stall, as it was: the byte-level model writes NUL, Postgres's COPY refuses it inside the
    commit (a real ``DataError``, the replacement turned off by a hook). Each shard fails with that
    message, is retried and quarantined; none is left running. A retry on a worker that replaces
    NUL with U+FFFD then reads every line."""
    env = {**distributed_env, "PISAR_MAX_ATTEMPTS": "2"}
    objects = subset(fault_free, 100)
    campaign = submit(s3, env, "refused", objects, byte_model, 25)
    raw = start_worker(with_hooks(env, keep_unstorable="1"), "raw")
    wait_until(lambda: set(campaign.states()) <= {"done", "quarantined"}, 120, "every shard to end done or quarantined")
    with campaign.engine.connect() as conn:
        shards = conn.execute(select(SHARDS)).all()
    quarantined = [r for r in shards if r.state == "quarantined"]
    assert quarantined, "the byte model's noise holds NUL in some line of every few"
    for row in quarantined:  # failed with the catalog's own words, twice, and released nothing half-written
        assert row.error.startswith("DataError") and "NUL" in row.error, row.error
        assert (row.attempts, row.lease_until, row.ok_lines + row.error_lines) == (2, None, 0)
    raw.send_signal(signal.SIGTERM)
    assert raw.wait(timeout=60) == 0

    start_worker(env, "fixed")
    retried = run_pisar(["retry", "refused"], env)
    assert retried.returncode == 0, retried.stderr
    wait_until(lambda: campaign.states() == {"done": len(shards)}, 120, "every shard done after the retry")
    campaign.assert_every_line_once(len(objects))
    with campaign.engine.connect() as conn:
        lines = conn.execute(select(LINE_TABLE.c.status, LINE_TABLE.c.text, LINE_TABLE.c.flags)).all()
    assert {r.status for r in lines} == {"ok"}
    assert not any("\x00" in r.text for r in lines)
    flagged = sum("unstorable_text" in (r.flags or "") for r in lines)
    assert flagged > 0
    campaign.report("commit-refused", len(objects), quarantined_shards=len(quarantined), unstorable_lines=flagged)


def test_a_commit_that_hangs_is_ended_by_the_server_and_its_shard_released(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """The worker stalls for 8 s inside its first commit, holding the lines' locks. Postgres ends the
    transaction after PISAR_COMMIT_TIMEOUT_SECONDS (2 s) idle, freeing them; the worker finds its
    connection gone (an outage), releases the shard with the attempt refunded, and reads it again."""
    env = {
        **distributed_env,
        "PISAR_LEASE_SECONDS": str(LEASE),
        "PISAR_COMMIT_TIMEOUT_SECONDS": "2",
        "PISAR_OUTAGE_RETRY_SECONDS": "2",
        "PISAR_BATCH_SIZE": "4",
    }
    objects = subset(fault_free, 100)
    campaign = submit(s3, env, "hang", objects, tiny_model, 25)
    worker = start_worker(with_hooks(env, commit_hang_seconds="8"), "stalling")
    started = now()
    wait_until(lambda: campaign.states() == {"done": 4}, 180, "every shard done after the hung commit")
    assert worker.poll() is None
    log = (tmp_path / "stalling.log").read_text(encoding="utf-8")
    assert "(stalled); released for another run" in log, log[-3000:]
    with campaign.engine.connect() as conn:
        rows = conn.execute(select(SHARDS.c.attempts, SHARDS.c.error)).all()
    assert {r.attempts for r in rows} == {1}  # the hung run's attempt was refunded
    campaign.report("commit-hang", len(objects), started, hang_s=8, commit_timeout_s=2)
    campaign.assert_every_line_once(len(objects))
    fault_free.assert_same_texts(campaign.texts())


def test_a_worker_that_cannot_serve_gives_its_shard_back_and_exits(
    s3,
    distributed_env,
    start_worker,
    tiny_model: Path,
    fault_free: FaultFree,
    tmp_path: Path,
) -> None:
    """A node told to use a GPU it does not have (PISAR_DEVICE=cuda on this CPU machine) claims a shard,
    fails to load its model, gives the shard back unspent, stops consuming and exits non-zero; the
    healthy worker finishes the campaign with no shard failed or quarantined."""
    objects = subset(fault_free, 100)
    campaign = submit(s3, distributed_env, "broken", objects, tiny_model, 25)
    started = time.monotonic()
    broken = start_worker({**distributed_env, "PISAR_DEVICE": "cuda"}, "broken")
    code = broken.wait(timeout=60)
    exit_s = time.monotonic() - started
    assert code == 3, (tmp_path / "broken.log").read_text(encoding="utf-8")[-3000:]
    log = (tmp_path / "broken.log").read_text(encoding="utf-8")
    assert "cannot serve" in log and "PISAR_DEVICE=cuda but no CUDA device is visible" in log
    with campaign.engine.connect() as conn:
        rows = conn.execute(select(SHARDS)).all()
    claimed = [r for r in rows if r.started_at is not None]
    assert [(r.state, r.attempts, r.lease_until, r.worker) for r in claimed] == [("queued", 0, None, None)]  # its one shard, back unspent
    assert {r.state for r in rows} == {"queued"}  # the rest never claimed: the worker stopped taking work

    start_worker(distributed_env, "healthy")
    wait_until(lambda: campaign.states() == {"done": 4}, 180, "the healthy worker to finish the campaign")
    with campaign.engine.connect() as conn:
        rows = conn.execute(select(SHARDS.c.attempts, SHARDS.c.worker)).all()
    assert {r.attempts for r in rows} == {1} and all(r.worker.startswith("healthy") for r in rows)
    campaign.report("worker-cannot-serve", len(objects), broken_exit_code=code, broken_exit_s=round(exit_s, 1))
    campaign.assert_every_line_once(len(objects))
    fault_free.assert_same_texts(campaign.texts())
