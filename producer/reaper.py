"""The reaper: shards whose worker died go back to the queue, or to quarantine after too many tries.

A running shard's lease is renewed by its worker's heartbeat (``pisar.worker.lease``), so an
expired lease means the worker is gone (killed, preempted, partitioned). Redis would redeliver its
unacked message only after the visibility timeout (hours) and not at all if Redis lost it; the
catalog knows at once. ``pisar reap`` runs this in a loop, one per deployment (a second one is
harmless: each transition is one conditional UPDATE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, select, update

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Shard, ShardState, utcnow

_SHARD = Shard.__table__
_CAMPAIGN = Campaign.__table__


@dataclass
class Reaped:
    """What one pass did: shards to re-publish per (campaign, queue), and shards quarantined."""

    requeue: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    quarantined: list[int] = field(default_factory=list)

    @property
    def requeued(self) -> int:
        return sum(len(ids) for ids in self.requeue.values())


def reap(url: str, max_attempts: int) -> Reaped:
    """Move every expired running shard to ``queued`` (attempts kept) or, at ``max_attempts``, ``quarantined``.

    The caller publishes ``requeue``; a shard set to queued whose message then fails to send is
    found again by ``pisar resume``, never lost.
    """
    now = utcnow()
    expired = and_(_SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until < now)
    reaped = Reaped()
    with get_engine(url).begin() as conn:
        rows = conn.execute(
            select(_SHARD.c.id, _SHARD.c.campaign_id, _SHARD.c.attempts, _SHARD.c.worker, _CAMPAIGN.c.queue)
            .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
            .where(expired)
            .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
        ).all()
        for row in rows:
            spent = row.attempts >= max_attempts
            values = (
                {
                    "state": ShardState.QUARANTINED.value,
                    "error": f"WorkerLost: the lease expired on attempt {row.attempts} of {max_attempts} (last worker {row.worker})",
                    "finished_at": now,
                }
                if spent
                else {"state": ShardState.QUEUED.value, "queued_at": now, "worker": None}
            )
            # Conditional on the lease still being expired: a worker that renewed meanwhile keeps its shard.
            changed = conn.execute(update(_SHARD).where(_SHARD.c.id == row.id, expired).values(lease_until=None, **values)).rowcount
            if changed and spent:
                reaped.quarantined.append(row.id)
            elif changed:
                reaped.requeue.setdefault((row.campaign_id, row.queue), []).append(row.id)
    return reaped
