"""Sending shards to the workers: one tiny message per shard, on the Redis list of its campaign's priority.

``publish`` marks shards queued, then sends (the reaper's re-queue and ``pisar resume`` of a few
shards). Campaign-sized sends go through the feeder (``producer/feeder.py``), which keeps Redis
under its high-water mark and calls ``send`` for what it picked.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Shard
from pisar.constants import TASK_RUN_SHARD
from pisar.producer.campaigns import mark_queued
from pisar.queue import configure, message_priority, require_redis
from pisar.safe_text import printable
from pisar.settings import Settings

_SHARD = Shard.__table__
_CAMPAIGN = Campaign.__table__


def publish(settings: Settings, campaign_id: int, queue: str, shard_ids: list[int], reset_attempts: bool = False) -> int:
    """Queue ``shard_ids`` of a campaign on ``queue`` at once; returns how many messages were sent."""
    if not shard_ids:
        return 0
    require_redis(settings)
    mark_queued(settings.catalog_url, campaign_id, shard_ids, reset_attempts)
    name, priority = campaign_name_and_priority(settings.catalog_url, campaign_id)
    return send(settings, campaign_id, queue, priority, shard_labels(settings.catalog_url, name, shard_ids))


def send(settings: Settings, campaign_id: int, queue: str, priority: int, labels: Sequence[tuple[int, str]]) -> int:
    """Send one message per ``(shard_id, label)``; the label is what Flower shows as the task's arguments."""
    app = configure(settings)
    with app.producer_or_acquire() as producer:
        for shard_id, label in labels:
            app.send_task(
                TASK_RUN_SHARD,
                args=[campaign_id, shard_id],
                argsrepr=label,
                queue=queue,
                priority=message_priority(priority),
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1, "interval_max": 5},
            )
    return len(labels)


def shard_label(campaign_name: str, index: int, lines: int) -> str:
    """``campaign 'vol-1917' shard 3 (256 lines)``: a readable task argument in Flower."""
    return f"campaign {printable(campaign_name)!r} shard {index} ({lines} lines)"


def campaign_name_and_priority(url: str, campaign_id: int) -> tuple[str, int]:
    with get_engine(url).connect() as conn:
        name, priority = conn.execute(select(_CAMPAIGN.c.name, _CAMPAIGN.c.priority).where(_CAMPAIGN.c.id == campaign_id)).one()
    return name, priority


def shard_labels(url: str, campaign_name: str, shard_ids: list[int]) -> list[tuple[int, str]]:
    """``(shard_id, label)`` for each shard, in the order given."""
    found: dict[int, str] = {}
    with get_engine(url).connect() as conn:
        for start in range(0, len(shard_ids), 1000):
            rows = conn.execute(
                select(_SHARD.c.id, _SHARD.c.index, _SHARD.c.line_count).where(_SHARD.c.id.in_(shard_ids[start : start + 1000]))
            )
            for shard_id, index, lines in rows:
                found[shard_id] = shard_label(campaign_name, index, lines)
    return [(shard_id, found[shard_id]) for shard_id in shard_ids if shard_id in found]
