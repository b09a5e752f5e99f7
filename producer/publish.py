"""Sending shards to the workers: one tiny message per shard, on the Redis list of its campaign's priority.

The feeder (``producer/feeder.py``) picks what to send, keeping Redis under its high-water mark,
marks it queued (``shards.publish_next``) and calls ``send``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pisar.constants import TASK_RUN_SHARD
from pisar.queue import configure, message_priority
from pisar.safe_text import printable
from pisar.settings import Settings


def send(
    settings: Settings, campaign_id: int, queue: str, priority: int, labels: Sequence[tuple[int, str]], task: str = TASK_RUN_SHARD
) -> int:
    """Send one ``task`` message per ``(shard_id, label)`` (a scan's id for ``TASK_DETECT_PAGE``); the label is what
    Flower shows as the task's arguments."""
    app = configure(settings)
    with app.producer_or_acquire() as producer:
        for shard_id, label in labels:
            app.send_task(
                task,
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


def scan_label(campaign_name: str, key: str) -> str:
    """``campaign 'vol-1917' scan 'f/0001.jpg'``: a detect task's readable argument in Flower."""
    return f"campaign {printable(campaign_name)!r} scan {printable(key)!r}"
