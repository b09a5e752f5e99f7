"""The feeder's pick, shared by the two kinds of unit it publishes: shards (``shards.py``) and scans (``pages.py``).

Each module keeps its own table's states and moves; what they share is how the next units are
chosen: pending, of the queue's campaigns at one priority, oldest campaign first, then the unit's
own order, locked so that two feeders never pick the same unit (``FOR UPDATE SKIP LOCKED``; SQLite
has one writer at a time anyway).
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Table, select

from pisar.catalog.models import Campaign, ShardState

_CAMPAIGN = Campaign.__table__


def pick_pending(conn: Connection, table: Table, order: Column, queue: str, priority: int, limit: int) -> list[int]:
    """The ids of the next ``limit`` pending rows of ``table``, locked for this transaction."""
    candidates = (
        select(table.c.id)
        .join(_CAMPAIGN, _CAMPAIGN.c.id == table.c.campaign_id)
        .where(_CAMPAIGN.c.queue == queue, _CAMPAIGN.c.priority == priority, table.c.state == ShardState.PENDING.value)
        .order_by(table.c.campaign_id, order)
        .limit(limit)
        .with_for_update(of=table, skip_locked=True)
    )
    return list(conn.execute(candidates).scalars())
