"""Sending shards to the workers: mark them queued in the catalog, then one tiny message each."""

from __future__ import annotations

from pisar.constants import TASK_RUN_SHARD
from pisar.producer.campaigns import mark_queued
from pisar.queue import configure, require_redis
from pisar.settings import Settings


def publish(settings: Settings, campaign_id: int, queue: str, shard_ids: list[int], reset_attempts: bool = False) -> int:
    """Queue ``shard_ids`` of a campaign on ``queue``; returns how many messages were sent."""
    if not shard_ids:
        return 0
    require_redis(settings)
    app = configure(settings)
    mark_queued(settings.catalog_url, campaign_id, shard_ids, reset_attempts)
    labels = shard_labels(settings.catalog_url, campaign_id, shard_ids)
    with app.producer_or_acquire() as producer:
        for shard_id in shard_ids:
            app.send_task(
                TASK_RUN_SHARD,
                args=[campaign_id, shard_id],
                argsrepr=labels.get(shard_id),  # what Flower shows as the task's arguments
                queue=queue,
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1, "interval_max": 5},
            )
    return len(shard_ids)


def shard_labels(url: str, campaign_id: int, shard_ids: list[int]) -> dict[int, str]:
    """``campaign 'vol-1917' shard 3 (256 lines)`` per shard id: readable task arguments in Flower."""
    from sqlalchemy import select

    from pisar.catalog.db import get_engine
    from pisar.catalog.models import Campaign, Shard
    from pisar.safe_text import printable

    shard = Shard.__table__
    labels: dict[int, str] = {}
    with get_engine(url).connect() as conn:
        name = conn.execute(select(Campaign.__table__.c.name).where(Campaign.__table__.c.id == campaign_id)).scalar_one()
        for start in range(0, len(shard_ids), 1000):
            rows = conn.execute(
                select(shard.c.id, shard.c.index, shard.c.line_count).where(shard.c.id.in_(shard_ids[start : start + 1000]))
            )
            for shard_id, index, lines in rows:
                labels[shard_id] = f"campaign {printable(name)!r} shard {index} ({lines} lines)"
    return labels
