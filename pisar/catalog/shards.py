"""The shard lifecycle: its states, the one table of allowed moves, and one function per move.

This module is the only writer of ``shard`` rows (``tests/test_architecture.py`` checks it). Each
move's SQL is built from ``MOVES`` (``pisar/catalog/shard_moves.py``): the ``UPDATE`` matches only rows in one of the move's source
states and sets its target, so a move the table does not allow matches nothing. ``docs/reliability.md``
shows the table as a diagram (``diagram()``; a test keeps the two equal).

- ``queued`` means a message for the shard is in Redis or about to be; ``pending`` means it waits in
  the catalog for the feeder. A shard whose worker died has no message left, so ``expire`` puts it
  back to ``pending``; a worker that gives a shard back re-sends its message, so ``release`` puts it
  to ``queued``.
- A ``running`` shard is held by its claim's fencing token: ``finish``, ``fail``, ``release``, ``renew``
  and ``probe`` match only that token, so a superseded run changes nothing.
- ``suspect`` marks a shard whose last worker died: its next run reads one line at a time, recording
  each key in ``probe_key`` first, so a line that kills the worker process is named and set aside.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Select, TextClause, Update, and_, insert, or_, select, text, update

from pisar.catalog.bulk import LineResult, upsert_line_results
from pisar.catalog.codecs import flag_pattern, has_flag_sql
from pisar.catalog.db import get_engine, limit_transaction
from pisar.catalog.models import Campaign, Line, LineStatus, Shard, ShardState, utcnow
from pisar.catalog.publishing import pick_pending
from pisar.catalog.shard_moves import MOVES, Move
from pisar.catalog.shard_values import Claim, Expired, Published, RunFacts, Skipped, shard_name
from pisar.constants import WORKER_LOST
from pisar.errors import WorkerCrash
from pisar.flags import EMPTY

_SHARD = Shard.__table__
_LINE = Line.__table__
_CAMPAIGN = Campaign.__table__
_CHUNK = 1000  # shard ids per statement in bulk moves

PENDING, QUEUED, RUNNING, DONE, FAILED, QUARANTINED = (
    ShardState.PENDING,
    ShardState.QUEUED,
    ShardState.RUNNING,
    ShardState.DONE,
    ShardState.FAILED,
    ShardState.QUARANTINED,
)


def _move(move: Move, *where: ColumnElement[bool]) -> Update:
    """``UPDATE shard`` for ``move``: only rows in one of its source states, set to its target."""
    transition = MOVES[move]
    sources = sorted(s.value for s in transition.sources)
    return update(_SHARD).where(_SHARD.c.state.in_(sources), *where).values(state=transition.target.value)


def _fenced(held: Claim) -> ColumnElement[bool]:
    return and_(_SHARD.c.id == held.shard_id, _SHARD.c.token == held.token, _SHARD.c.state == RUNNING.value)


def held_by_a_worker(now: datetime) -> ColumnElement[bool]:
    """Shards running under a lease that has not expired at ``now``: a live worker is on them."""
    return and_(_SHARD.c.state == RUNNING.value, _SHARD.c.lease_until >= now)


# --- list ------------------------------------------------------------------------------------


def insert_listed(conn: Connection, campaign_id: int, first_index: int, line_counts: Sequence[int]) -> list[int]:
    """New shards of ``line_counts`` lines each, indexes from ``first_index``; their ids, in order (caller's transaction)."""
    state = MOVES[Move.LIST].target.value
    rows = [
        {"campaign_id": campaign_id, "index": first_index + i, "state": state, "line_count": count} for i, count in enumerate(line_counts)
    ]
    return list(conn.execute(insert(_SHARD).returning(_SHARD.c.id, sort_by_parameter_order=True), rows).scalars())


def insert_detecting(conn: Connection, campaign_id: int, first_index: int, count: int) -> list[int]:
    """New empty shards of a detect campaign, waiting for their scans' lines; their ids, in order (caller's transaction)."""
    state = MOVES[Move.LIST_SCANS].target.value
    rows = [{"campaign_id": campaign_id, "index": first_index + i, "state": state, "line_count": 0} for i in range(count)]
    return list(conn.execute(insert(_SHARD).returning(_SHARD.c.id, sort_by_parameter_order=True), rows).scalars())


def lock_detecting(conn: Connection, shard_id: int) -> None:
    """Hold the shard's row until the caller's transaction ends: its scans' commits take turns
    (Postgres), so the one that settles the last scan sees every other and moves the shard."""
    conn.execute(select(_SHARD.c.id).where(_SHARD.c.id == shard_id).with_for_update())


def wait_for_detection(conn: Connection, shard_ids: Sequence[int]) -> int:
    """Shards one of whose scans is detected again go back to ``detecting`` (caller's transaction)."""
    return conn.execute(_move(Move.REDETECT, _SHARD.c.id.in_(list(shard_ids)))).rowcount if shard_ids else 0


def add_detected(conn: Connection, shard_id: int, lines: int, last_scan: bool) -> None:
    """A scan's ``lines`` joined the shard (caller's transaction); after its ``last_scan`` it is read."""
    conn.execute(update(_SHARD).where(_SHARD.c.id == shard_id).values(line_count=_SHARD.c.line_count + lines))
    campaign_id = select(_SHARD.c.campaign_id).where(_SHARD.c.id == shard_id).scalar_subquery()
    conn.execute(
        update(_CAMPAIGN).where(_CAMPAIGN.c.id == campaign_id).values(line_count=_CAMPAIGN.c.line_count + lines, updated_at=utcnow())
    )
    if last_scan:
        conn.execute(_move(Move.DETECTED, _SHARD.c.id == shard_id))
        count_lines(conn, shard_id)


# --- publish / unpublish (the feeder) --------------------------------------------------------


def publish_next(url: str, queue: str, priority: int, limit: int) -> list[Published]:
    """Mark the next ``limit`` pending shards of ``queue`` at ``priority`` queued: oldest campaign, then shard order.

    The catalog says queued before the message exists, so a fast worker's claim is never
    overwritten. Two feeders never pick the same shard (``FOR UPDATE SKIP LOCKED``).
    """
    if limit <= 0:
        return []
    with get_engine(url).begin() as conn:
        ids = pick_pending(conn, _SHARD, _SHARD.c.index, queue, priority, limit)
        if not ids:
            return []
        conn.execute(_move(Move.PUBLISH, _SHARD.c.id.in_(ids)).values(queued_at=utcnow()))
        rows = conn.execute(
            select(_SHARD.c.id, _SHARD.c.campaign_id, _CAMPAIGN.c.name, _SHARD.c.index, _SHARD.c.line_count)
            .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
            .where(_SHARD.c.id.in_(ids), _SHARD.c.state == QUEUED.value)
            .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
        ).all()
    return [Published(*row) for row in rows]


def unpublish(url: str, shard_ids: Sequence[int]) -> int:
    """Shards whose messages could not be sent wait for the feeder again; returns how many."""
    changed = 0
    with get_engine(url).begin() as conn:
        for chunk in _chunks(shard_ids):
            changed += conn.execute(_move(Move.UNPUBLISH, _SHARD.c.id.in_(chunk))).rowcount
    return changed


# --- claim and a run's own moves (the worker) ------------------------------------------------


def claim(url: str, shard_id: int, worker: str, lease_seconds: int, max_attempts: int) -> Claim | Skipped:
    """Take the shard if nobody holds a live lease on it; otherwise say why not (``Skipped``).

    A shard still ``running`` under an expired lease goes through ``expire`` first, in the same
    transaction: its dead worker's line is set aside and the shard is suspect, whichever of the
    reaper and a redelivered message gets there first. A delivery that finds nothing to do is
    counted as a duplicate; one that finds a live lease is not: it is owed a later look.
    """
    now = utcnow()
    with get_engine(url).begin() as conn:
        _expire(conn, now, max_attempts, _SHARD.c.id == shard_id)
        row = conn.execute(claim_statement(shard_id, worker, lease_seconds, max_attempts, now)).first()
        if row is None:
            found = conn.execute(
                select(_SHARD.c.index, _SHARD.c.worker, _SHARD.c.lease_until, _CAMPAIGN.c.name, held_by_a_worker(now).label("held"))
                .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
                .where(_SHARD.c.id == shard_id)
            ).first()
            if found is None:
                return Skipped()
            name = shard_name(found.name, found.index)
            if found.held:
                return Skipped(_aware(found.lease_until), found.worker, name)
            conn.execute(update(_SHARD).where(_SHARD.c.id == shard_id).values(duplicate_deliveries=_SHARD.c.duplicate_deliveries + 1))
            return Skipped(name=name)
    return Claim(
        shard_id,
        row.campaign_id,
        row.token,
        row.attempts,
        bool(row.suspect),
        row.model_id,
        row.model_revision,
        row.index,
        shard_name(row.campaign_name, row.index),
    )


def _aware(moment: datetime) -> datetime:
    """A catalog time as UTC-aware (SQLite hands times back without their zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def claim_statement(shard_id: int, worker: str, lease_seconds: int, max_attempts: int, now: datetime) -> Update:
    """The claim's one ``UPDATE ... RETURNING`` (also EXPLAINed by bench/catalog.py)."""
    return (
        _move(Move.CLAIM, _SHARD.c.id == shard_id, _SHARD.c.attempts < max_attempts)
        .values(
            token=_SHARD.c.token + 1,
            attempts=_SHARD.c.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            worker=worker,
            started_at=now,
            finished_at=None,
        )
        .returning(
            _SHARD.c.campaign_id,
            _SHARD.c.token,
            _SHARD.c.attempts,
            _SHARD.c.suspect,
            _SHARD.c.model_id,
            _SHARD.c.model_revision,
            _SHARD.c.index,
            select(_CAMPAIGN.c.name).where(_CAMPAIGN.c.id == _SHARD.c.campaign_id).scalar_subquery().label("campaign_name"),
        )
    )


def lines_to_do_statement(shard_id: int) -> Select:
    """The keys of a shard still to read, in key order (see ``lines_to_do``)."""
    wanted = or_(_LINE.c.status == LineStatus.PENDING.value, _LINE.c.retry_id.is_not(None))
    return select(_LINE.c.key).where(_LINE.c.shard_id == shard_id, wanted).order_by(_LINE.c.key)


def lines_to_do(url: str, shard_id: int) -> list[str]:
    """Keys of the shard's lines still to read: pending ones, and those a retry asked for again.

    Lines that crashed a worker (``WorkerCrash``) are done (an error) and so left out: they would
    only crash it again, unless an operator names them in a retry.
    """
    with get_engine(url).connect() as conn:
        return [r.key for r in conn.execute(lines_to_do_statement(shard_id))]


def finish(url: str, held: Claim, results: Sequence[LineResult], facts: RunFacts, timeout_seconds: float | None = None) -> bool:
    """Write every line's result and mark the shard done in one transaction; False if a newer claim holds it.

    ``timeout_seconds`` bounds the transaction on Postgres (a statement, and the time between two):
    a commit stuck behind a lock or a stalled client ends as an ``OperationalError`` (an outage),
    and the server frees its locks.
    """
    with get_engine(url).begin() as conn:
        limit_transaction(conn, timeout_seconds)
        upsert_line_results(conn, held.campaign_id, held.shard_id, results)
        done = conn.execute(
            _move(Move.FINISH, _fenced(held)).values(
                lease_until=None,
                probe_key=None,
                suspect=False,
                finished_at=utcnow(),
                error=None,
                engine=facts.engine,
                load_seconds=facts.load_seconds,
                generate_seconds=facts.generate_seconds,
                run_lines=len(results),
            )
        ).rowcount
        if not done:
            conn.rollback()
            return False
        count_lines(conn, held.shard_id)
    return True


def fail(url: str, held: Claim, error: str, max_attempts: int) -> ShardState | None:
    """A deterministic failure of this run: ``failed`` (retried), or ``quarantined`` at the last attempt; ``None`` if fenced."""
    move = Move.QUARANTINE if held.attempts >= max_attempts else Move.FAIL
    with get_engine(url).begin() as conn:
        changed = conn.execute(
            _move(move, _fenced(held)).values(error=error[:4000], lease_until=None, probe_key=None, finished_at=utcnow())
        ).rowcount
    return MOVES[move].target if changed else None


def release(url: str, held: Claim) -> bool:
    """Give the shard back (``queued``, attempt refunded) for its re-sent message; False if fenced."""
    with get_engine(url).begin() as conn:
        changed = conn.execute(
            _move(Move.RELEASE, _fenced(held)).values(
                lease_until=None, probe_key=None, attempts=_SHARD.c.attempts - 1, worker=None, queued_at=utcnow()
            )
        ).rowcount
    return changed == 1


def renew(url: str, held: Claim, lease_seconds: int) -> bool:
    """Extend a held lease (the heartbeat); False once a newer claim has taken the shard."""
    with get_engine(url).begin() as conn:
        changed = conn.execute(update(_SHARD).where(_fenced(held)).values(lease_until=utcnow() + timedelta(seconds=lease_seconds))).rowcount
    return changed == 1


def probe(url: str, held: Claim, key: str) -> bool:
    """Record (committed) which line a careful run is about to read; ``expire`` blames it if the worker dies."""
    with get_engine(url).begin() as conn:
        return conn.execute(update(_SHARD).where(_fenced(held)).values(probe_key=key)).rowcount == 1


# --- expire (the reaper) ---------------------------------------------------------------------


def expire_leases(url: str, max_attempts: int, campaign_id: int | None = None) -> Expired:
    """Move every expired running shard (of all campaigns, or one) back in line, or to quarantine (``_expire``)."""
    with get_engine(url).begin() as conn:
        return _expire(conn, utcnow(), max_attempts, None if campaign_id is None else _SHARD.c.campaign_id == campaign_id)


def _expire(conn: Connection, now: datetime, max_attempts: int, which: ColumnElement[bool] | None = None) -> Expired:
    """Expired running shards (``which`` narrows them) go to ``pending``, or to ``quarantined`` after ``max_attempts``.

    A shard that was being read one line at a time (``probe_key`` set) names the line its worker
    died on: that line becomes a ``WorkerCrash`` error and the attempt is refunded, since the next
    run gets further. Each move is conditional on the lease still being expired, so a worker that
    renewed meanwhile keeps its shard and two reapers do no harm.
    """
    expired = and_(_SHARD.c.state == RUNNING.value, _SHARD.c.lease_until < now)
    query = select(_SHARD.c.id, _SHARD.c.attempts, _SHARD.c.worker, _SHARD.c.probe_key).where(expired).order_by(_SHARD.c.id)
    if which is not None:
        query = query.where(which)
    done = Expired()
    for row in conn.execute(query).all():
        lost = f"{WORKER_LOST}: the lease expired on attempt {row.attempts} of {max_attempts} (last worker {row.worker})"
        values: dict[str, object] = {"lease_until": None, "probe_key": None, "worker": None, "suspect": True}
        if row.probe_key is not None:
            move = Move.EXPIRE
            values.update(attempts=_SHARD.c.attempts - 1, error=f"{lost}; it died reading {row.probe_key}, now set aside as WorkerCrash")
        elif row.attempts >= max_attempts:
            move = Move.QUARANTINE
            values.update(error=lost, finished_at=now)
        else:
            move = Move.EXPIRE
            values.update(error=lost)
        if not conn.execute(_move(move, _SHARD.c.id == row.id, expired).values(**values)).rowcount:
            continue
        if row.probe_key is not None:
            _set_aside(conn, row.id, row.probe_key, row.worker, now)
            done.poisoned.append(row.probe_key)
        (done.quarantined if move is Move.QUARANTINE else done.returned).append(row.id)
    return done


def _set_aside(conn: Connection, shard_id: int, key: str, worker: str | None, now: datetime) -> None:
    """Record the line a worker died on as a ``WorkerCrash`` error, so no run reads it again."""
    crash = WorkerCrash(f"the worker process ({worker}) died while reading this line; it was set aside so its shard could finish")
    conn.execute(
        update(_LINE)
        .where(_LINE.c.shard_id == shard_id, _LINE.c.key == key)
        .values(status=LineStatus.ERROR.value, error_class=crash.error_class, error=str(crash), worker=worker, finished_at=now)
    )
    count_lines(conn, shard_id)


# --- reopen (resume, retry) ------------------------------------------------------------------


def reopen(url: str, campaign_id: int, shard_ids: Iterable[int], *, reset_attempts: bool, max_attempts: int) -> int:
    """Put these shards of a campaign back in line (``pending``) for the feeder or an in-process run; how many moved.

    Expired running shards of the campaign go through ``expire`` first (a dead worker's line is set
    aside as the reaper would); a shard a live worker holds is left alone. ``reset_attempts`` (a
    retry) gives every shard a fresh budget of attempts.
    """
    ids = list(shard_ids)
    values: dict[str, object] = {"attempts": 0} if reset_attempts else {}
    changed = 0
    with get_engine(url).begin() as conn:
        _expire(conn, utcnow(), max_attempts, _SHARD.c.campaign_id == campaign_id)
        for chunk in _chunks(ids):
            changed += conn.execute(
                _move(Move.REOPEN, _SHARD.c.campaign_id == campaign_id, _SHARD.c.id.in_(chunk)).values(**values)
            ).rowcount
        conn.execute(update(_CAMPAIGN).where(_CAMPAIGN.c.id == campaign_id).values(updated_at=utcnow()))
    return changed


# --- writes that change no state -------------------------------------------------------------


def count_lines(conn: Connection, shard_id: int) -> None:
    """Rewrite the shard's line counters from its lines, in the caller's transaction.

    Called wherever line results change (a commit, a line set aside), so the counters `status`
    sums are exact; one shard's few hundred lines are read through ``ix_line_shard``.
    """
    conn.execute(count_lines_statement(shard_id))


def count_lines_statement(shard_id: int) -> TextClause:
    """The counters' rewrite for one shard (also EXPLAINed by bench/catalog.py)."""
    mine = "FROM line WHERE line.shard_id = :id AND line.status"
    return text(
        "UPDATE shard SET"
        f" ok_lines = (SELECT count(*) {mine} = :ok),"
        f" error_lines = (SELECT count(*) {mine} = :error),"
        f" empty_lines = (SELECT count(*) {mine} = :ok AND {has_flag_sql('line.flags', 'empty')})"
        " WHERE id = :id"
    ).bindparams(id=shard_id, ok=LineStatus.OK.value, error=LineStatus.ERROR.value, empty=flag_pattern(EMPTY))


def override_model(conn: Connection, shard_ids: Sequence[int], model_id: str | None, model_revision: str | None) -> None:
    """`retry --model`: these shards' next runs read with another model (``None`` restores the campaign's)."""
    for chunk in _chunks(shard_ids):
        conn.execute(update(_SHARD).where(_SHARD.c.id.in_(chunk)).values(model_id=model_id, model_revision=model_revision))


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
