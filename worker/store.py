"""Shard lease and fencing: claim with one UPDATE ... RETURNING, commit results only with the token.

A claim bumps the fencing token. Whatever a slower, superseded run of the same shard tries to
commit later carries an old token, matches no row, and is rolled back: a shard that ran twice
is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Select, Update, and_, or_, select, update

from pisar.catalog.bulk import LineResult, count_shard_lines, upsert_line_results
from pisar.catalog.db import get_engine
from pisar.catalog.expiry import expire_leases
from pisar.catalog.models import Line, LineStatus, Shard, ShardState, utcnow
from pisar.constants import WORKER_LOST

_SHARD = Shard.__table__
_LINE = Line.__table__
_CLAIMABLE = (ShardState.PENDING, ShardState.QUEUED, ShardState.FAILED)


@dataclass(frozen=True)
class Claim:
    """A held shard: the token proves the lease at commit time."""

    shard_id: int
    campaign_id: int
    token: int
    attempts: int
    suspect: bool = False  # its last run's worker died: run it one line at a time to find the line that kills
    model_id: str | None = None  # `retry --model` set another model for this shard
    model_revision: str | None = None


def claim(url: str, shard_id: int, worker: str, lease_seconds: int, max_attempts: int) -> Claim | None:
    """Take the shard if nobody holds a live lease on it; ``None`` means skip this delivery.

    A shard still ``running`` under an expired lease goes through the reaper's transition first, in
    the same transaction (``expire_leases``): its dead worker's line is set aside and the run is
    marked suspect, whichever of the reaper and a redelivered message gets there first.
    """
    now = utcnow()
    with get_engine(url).begin() as conn:
        expire_leases(conn, now, max_attempts, shard_id)
        row = conn.execute(claim_statement(shard_id, worker, lease_seconds, max_attempts, now)).first()
        if row is None:
            conn.execute(update(_SHARD).where(_SHARD.c.id == shard_id).values(duplicate_deliveries=_SHARD.c.duplicate_deliveries + 1))
            return None
    suspect = (row.error or "").startswith(WORKER_LOST)
    return Claim(shard_id, row.campaign_id, row.token, row.attempts, suspect, row.model_id, row.model_revision)


def claim_statement(shard_id: int, worker: str, lease_seconds: int, max_attempts: int, now: datetime) -> Update:
    """The claim's one ``UPDATE ... RETURNING``: a new token and lease if the shard is claimable (also EXPLAINed by bench/catalog.py)."""
    return (
        update(_SHARD)
        .where(_SHARD.c.id == shard_id, _SHARD.c.attempts < max_attempts, _SHARD.c.state.in_([s.value for s in _CLAIMABLE]))
        .values(
            state=ShardState.RUNNING.value,
            token=_SHARD.c.token + 1,
            attempts=_SHARD.c.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            worker=worker,
            started_at=now,
            finished_at=None,
        )
        .returning(_SHARD.c.campaign_id, _SHARD.c.token, _SHARD.c.attempts, _SHARD.c.error, _SHARD.c.model_id, _SHARD.c.model_revision)
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


def _fenced(held: Claim):  # noqa: ANN202 - a SQLAlchemy where-clause
    return and_(_SHARD.c.id == held.shard_id, _SHARD.c.token == held.token, _SHARD.c.state == ShardState.RUNNING.value)


def commit(url: str, held: Claim, results: list[LineResult], engine: str, load_seconds: float, generate_seconds: float) -> bool:
    """Write every line and mark the shard done in one transaction; False if the lease was lost."""
    with get_engine(url).begin() as conn:
        if not _mark_done(conn, held, engine, load_seconds, generate_seconds, len(results)):
            conn.rollback()
            return False
        upsert_line_results(conn, held.campaign_id, held.shard_id, results)
        count_shard_lines(conn, held.shard_id)
    return True


def _mark_done(conn: Connection, held: Claim, engine: str, load_seconds: float, generate_seconds: float, lines: int) -> bool:
    result = conn.execute(
        update(_SHARD)
        .where(_fenced(held))
        .values(
            state=ShardState.DONE.value,
            lease_until=None,
            probe_key=None,
            finished_at=utcnow(),
            error=None,
            engine=engine,
            load_seconds=load_seconds,
            generate_seconds=generate_seconds,
            run_lines=lines,
        )
    )
    return result.rowcount == 1


def fail(url: str, held: Claim, error: str, max_attempts: int) -> str | None:
    """Record a shard-level failure; returns the new state, or ``None`` if the lease was lost."""
    state = ShardState.QUARANTINED if held.attempts >= max_attempts else ShardState.FAILED
    with get_engine(url).begin() as conn:
        result = conn.execute(
            update(_SHARD)
            .where(_fenced(held))
            .values(state=state.value, error=error[:4000], lease_until=None, probe_key=None, finished_at=utcnow())
        )
    return state.value if result.rowcount == 1 else None


def renew(url: str, held: Claim, lease_seconds: int) -> bool:
    """Extend a held lease (the heartbeat); False once a newer claim has taken the shard."""
    with get_engine(url).begin() as conn:
        result = conn.execute(update(_SHARD).where(_fenced(held)).values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
    return result.rowcount == 1


def probe(url: str, held: Claim, key: str) -> bool:
    """Record (committed) which line a careful run is about to read; the reaper blames it if the worker dies."""
    with get_engine(url).begin() as conn:
        return conn.execute(update(_SHARD).where(_fenced(held)).values(probe_key=key)).rowcount == 1


def release(url: str, held: Claim) -> bool:
    """Give an interrupted shard back (queued, attempt not counted) so a rerun takes it at once."""
    with get_engine(url).begin() as conn:
        result = conn.execute(
            update(_SHARD)
            .where(_fenced(held))
            .values(state=ShardState.QUEUED.value, lease_until=None, probe_key=None, attempts=_SHARD.c.attempts - 1, worker=None)
        )
    return result.rowcount == 1
