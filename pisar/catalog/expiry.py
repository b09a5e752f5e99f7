"""What becomes of a shard whose lease expired: its worker is gone (killed, preempted, partitioned).

One transition, used by the reaper for every expired shard and by a claim that finds the shard it
was sent still ``running`` under a dead lease (Celery redelivers a dead worker's message, and it can
arrive before the reaper's next pass). Both paths must agree: the next run reads a shard whose
worker died one line at a time, and a line named by ``probe_key`` is set aside, never read again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, and_, select, update

from pisar.catalog.bulk import count_shard_lines
from pisar.catalog.models import Campaign, Line, LineStatus, Shard, ShardState
from pisar.constants import WORKER_LOST
from pisar.errors import WorkerCrash

_SHARD = Shard.__table__
_LINE = Line.__table__
_CAMPAIGN = Campaign.__table__


@dataclass
class Expired:
    """What one pass did: shards back in the queue per (campaign, queue), shards quarantined, lines set aside."""

    requeue: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    quarantined: list[int] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)  # keys set aside as WorkerCrash

    @property
    def requeued(self) -> int:
        return sum(len(ids) for ids in self.requeue.values())


def expire_leases(conn: Connection, now: datetime, max_attempts: int, shard_id: int | None = None) -> Expired:
    """Move expired running shards (all, or only ``shard_id``) to ``queued`` or, after ``max_attempts``, ``quarantined``.

    A shard that was being read one line at a time (``probe_key`` set) names the line its worker
    died on: that line becomes a ``WorkerCrash`` error and the shard is re-queued without spending
    an attempt, since the next run gets further. Each move is conditional on the lease still being
    expired, so a worker that renewed meanwhile keeps its shard and two reapers do no harm.
    """
    expired = and_(_SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until < now)
    query = (
        select(_SHARD.c.id, _SHARD.c.campaign_id, _SHARD.c.attempts, _SHARD.c.worker, _SHARD.c.probe_key, _CAMPAIGN.c.queue)
        .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
        .where(expired)
        .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
    )
    if shard_id is not None:
        query = query.where(_SHARD.c.id == shard_id)
    done = Expired()
    for row in conn.execute(query).all():
        lost = f"{WORKER_LOST}: the lease expired on attempt {row.attempts} of {max_attempts} (last worker {row.worker})"
        if row.probe_key is not None:
            values = {"state": ShardState.QUEUED.value, "queued_at": now, "attempts": _SHARD.c.attempts - 1}
            values["error"] = f"{lost}; it died reading {row.probe_key}, now set aside as {WorkerCrash.__name__}"
        elif row.attempts >= max_attempts:
            values = {"state": ShardState.QUARANTINED.value, "error": lost, "finished_at": now}
        else:
            values = {"state": ShardState.QUEUED.value, "queued_at": now, "error": lost}
        changed = conn.execute(
            update(_SHARD).where(_SHARD.c.id == row.id, expired).values(lease_until=None, probe_key=None, worker=None, **values)
        ).rowcount
        if not changed:
            continue
        if row.probe_key is not None:
            _set_aside(conn, row.id, row.probe_key, row.worker, now)
            done.poisoned.append(row.probe_key)
        if values["state"] == ShardState.QUARANTINED.value:
            done.quarantined.append(row.id)
        else:
            done.requeue.setdefault((row.campaign_id, row.queue), []).append(row.id)
    return done


def _set_aside(conn: Connection, shard_id: int, key: str, worker: str | None, now: datetime) -> None:
    """Record the line a worker died on as a ``WorkerCrash`` error, so no run reads it again."""
    crash = WorkerCrash(f"the worker process ({worker}) died while reading this line; it was set aside so its shard could finish")
    conn.execute(
        update(_LINE)
        .where(_LINE.c.shard_id == shard_id, _LINE.c.key == key)
        .values(status=LineStatus.ERROR.value, error_class=crash.error_class, error=str(crash), worker=worker, finished_at=now)
    )
    count_shard_lines(conn, shard_id)
