"""The reaper: shards whose worker died go back to the queue, or to quarantine after too many tries.

A running shard's lease is renewed by its worker's heartbeat (``pisar.worker.lease``), so an
expired lease means the worker is gone (killed, preempted, partitioned). Redis would redeliver its
unacked message only after the visibility timeout (hours) and not at all if Redis lost it; the
catalog knows at once. ``pisar reap`` runs this in a loop, one per deployment (a second one is
harmless: each transition is one conditional UPDATE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, and_, select, update

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line, LineStatus, Shard, ShardState, utcnow
from pisar.constants import WORKER_LOST
from pisar.errors import WorkerCrash

_SHARD = Shard.__table__
_LINE = Line.__table__
_CAMPAIGN = Campaign.__table__


@dataclass
class Reaped:
    """What one pass did: shards to re-publish per (campaign, queue), and shards quarantined."""

    requeue: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    quarantined: list[int] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)  # keys set aside as WorkerCrash

    @property
    def requeued(self) -> int:
        return sum(len(ids) for ids in self.requeue.values())


def reap(url: str, max_attempts: int) -> Reaped:
    """Move every expired running shard to ``queued`` or, after ``max_attempts``, ``quarantined``.

    A shard that was being read one line at a time (``probe_key`` set) names the line its worker
    died on: that line becomes a ``WorkerCrash`` error and the shard is re-queued without spending
    an attempt, since the next run gets further. The caller publishes ``requeue``; a shard set to
    queued whose message then fails to send is found again by ``pisar resume``, never lost.
    """
    now = utcnow()
    expired = and_(_SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until < now)
    reaped = Reaped()
    with get_engine(url).begin() as conn:
        rows = conn.execute(
            select(_SHARD.c.id, _SHARD.c.campaign_id, _SHARD.c.attempts, _SHARD.c.worker, _SHARD.c.probe_key, _CAMPAIGN.c.queue)
            .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
            .where(expired)
            .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
        ).all()
        for row in rows:
            lost = f"{WORKER_LOST}: the lease expired on attempt {row.attempts} of {max_attempts} (last worker {row.worker})"
            if row.probe_key is not None:
                values = {"state": ShardState.QUEUED.value, "queued_at": now, "attempts": _SHARD.c.attempts - 1}
                values["error"] = f"{lost}; it died reading {row.probe_key}, now set aside as {WorkerCrash.__name__}"
            elif row.attempts >= max_attempts:
                values = {"state": ShardState.QUARANTINED.value, "error": lost, "finished_at": now}
            else:
                values = {"state": ShardState.QUEUED.value, "queued_at": now, "error": lost}
            # Conditional on the lease still being expired: a worker that renewed meanwhile keeps its shard.
            changed = conn.execute(
                update(_SHARD).where(_SHARD.c.id == row.id, expired).values(lease_until=None, probe_key=None, worker=None, **values)
            ).rowcount
            if not changed:
                continue
            if row.probe_key is not None:
                _set_aside(conn, row.id, row.probe_key, row.worker, now)
                reaped.poisoned.append(row.probe_key)
            if values["state"] == ShardState.QUARANTINED.value:
                reaped.quarantined.append(row.id)
            else:
                reaped.requeue.setdefault((row.campaign_id, row.queue), []).append(row.id)
    return reaped


def _set_aside(conn: Connection, shard_id: int, key: str, worker: str | None, now: datetime) -> None:
    """Record the line a worker died on as a ``WorkerCrash`` error, so no run reads it again."""
    crash = WorkerCrash(f"the worker process ({worker}) died while reading this line; it was set aside so its shard could finish")
    conn.execute(
        update(_LINE)
        .where(_LINE.c.shard_id == shard_id, _LINE.c.key == key)
        .values(status=LineStatus.ERROR.value, error_class=crash.error_class, error=str(crash), worker=worker, finished_at=now)
    )
