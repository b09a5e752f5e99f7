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
    with app.producer_or_acquire() as producer:
        for shard_id in shard_ids:
            app.send_task(
                TASK_RUN_SHARD,
                args=[campaign_id, shard_id],
                queue=queue,
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1, "interval_max": 5},
            )
    return len(shard_ids)
