"""Back-pressure: Redis holds a bounded window of shard messages; the rest wait in the catalog.

A 100 M-line campaign is ~400,000 shards, hundreds of MB of Redis if published at once (the bytes
per queued message: docs/performance.md, from `bench/listing.py`), and Redis must never evict (an evicted message is a lost
shard). So shards start ``pending`` in the catalog and the feeder publishes them in windows:

- per queue and campaign priority, the messages a new one would wait behind ("ahead": those of its
  priority and every more urgent one) are counted in Redis with one pipelined LLEN per list;
- when fewer than the low-water mark are ahead, it publishes pending shards up to the high-water
  mark, most urgent campaign first, then oldest campaign, then shard order.

Redis therefore holds at most the high-water mark per priority in use (flat, whatever the campaign
size), and an urgent campaign's shards go out at once on a list the workers pop first, so it
overtakes a running large campaign after the shards already on a GPU.

It runs in `pisar feed` (``producer/feed_loop.py``: a loop every ``feed_interval_seconds``, which
also reaps dead workers' shards), and once at the end of `submit`, `resume` and `retry`, so small
campaigns start at once without it. Two feeders are safe: a Redis lock per queue makes each top-up
one at a time, and the pick of pending shards is a conditional UPDATE (``shards.publish_next``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Exists, func, select

from pisar.catalog import pages, shards
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Page, Shard, ShardState
from pisar.constants import TASK_DETECT_PAGE
from pisar.producer.publish import scan_label, send, shard_label
from pisar.queue import detect_queue, require_redis, waiting_by_priority
from pisar.settings import Settings

log = logging.getLogger(__name__)

_SHARD = Shard.__table__
_CAMPAIGN = Campaign.__table__
_PAGE = Page.__table__
LOCK_SECONDS = 120  # a feeder that dies holding the lock frees it after this


@dataclass
class TopUp:
    """What one top-up of a queue found and did."""

    queue: str
    waiting: int = 0  # messages in Redis before the top-up
    sent: int = 0
    by_campaign: dict[str, int] = field(default_factory=dict)
    busy: bool = False  # another feeder held this queue's lock

    def describe(self) -> str:
        campaigns = ", ".join(f"{n} of {name}" for name, n in self.by_campaign.items())
        return f"queue '{self.queue}': {self.waiting} waiting, published {self.sent} ({campaigns})"


def _has_pending() -> Exists:
    """The campaign has a shard waiting for the feeder (answered from the partial index on pending shards)."""
    return select(_SHARD.c.id).where(_SHARD.c.campaign_id == _CAMPAIGN.c.id, _SHARD.c.state == ShardState.PENDING.value).exists()


def queues_with_pending(url: str) -> list[str]:
    """Every queue that has a pending shard waiting for the feeder."""
    query = select(_CAMPAIGN.c.queue).where(_has_pending()).distinct()
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(query).scalars())


def feed(settings: Settings) -> list[TopUp]:
    """Top up every queue that has pending shards, and every detect queue that has scans to send; what each top-up did."""
    url = settings.catalog_url
    return [top_up(settings, queue) for queue in queues_with_pending(url)] + [
        top_up_detect(settings, queue) for queue in queues_with_scans(url)
    ]


# --- scans to detect: their own queue, and back-pressure from the lines detected but not yet read ---


def _has_pending_scan() -> Exists:
    return select(_PAGE.c.id).where(_PAGE.c.campaign_id == _CAMPAIGN.c.id, _PAGE.c.state == ShardState.PENDING.value).exists()


def queues_with_scans(url: str) -> list[str]:
    """Every (read) queue whose campaigns have scans waiting to be sent to detection."""
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(select(_CAMPAIGN.c.queue).where(_has_pending_scan()).distinct()).scalars())


def lines_waiting_to_be_read(url: str, queue: str) -> int:
    """Lines detected on ``queue``'s detect campaigns whose shards wait to be read (pending or queued)."""
    has_scans = select(_PAGE.c.id).where(_PAGE.c.campaign_id == _CAMPAIGN.c.id).exists()
    query = (
        select(func.coalesce(func.sum(_SHARD.c.line_count), 0))
        .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
        .where(_CAMPAIGN.c.queue == queue, _SHARD.c.state.in_([ShardState.PENDING.value, ShardState.QUEUED.value]), has_scans)
    )
    with get_engine(url).connect() as conn:
        return int(conn.execute(query).scalar_one())


def top_up_detect(settings: Settings, queue: str) -> TopUp:
    """Send pending scans of ``queue``'s campaigns to its detect queue, in the same windows as shards,
    unless ``detect_lines_ahead`` detected lines already wait to be read: detection then waits for
    reading (the GPUs), instead of piling detected lines up in the catalog."""
    url = settings.catalog_url
    waiting_lines = lines_waiting_to_be_read(url, queue)
    if waiting_lines >= settings.detect_lines_ahead:
        log.info("queue %s: %s detected lines wait to be read; no scans sent to detection", queue, waiting_lines)
        return TopUp(detect_queue(queue))
    return _fill(
        settings,
        detect_queue(queue),
        lambda: _scan_priorities(url, queue),
        lambda p, room, result: _send_scans(settings, queue, p, room, result),
    )


def _send_scans(settings: Settings, queue: str, priority: int, room: int, result: TopUp) -> int:
    """Move up to ``room`` pending scans of one priority to ``queued`` and send them; back to pending if sending fails."""
    picked = pages.publish_next(settings.catalog_url, queue, priority, room)
    by_campaign: dict[int, list] = defaultdict(list)
    for page in picked:
        by_campaign[page.campaign_id].append(page)
    sent = 0
    for campaign_id, chosen in by_campaign.items():
        labels = [(page.page_id, scan_label(page.campaign_name, page.key)) for page in chosen]
        try:
            send(settings, campaign_id, result.queue, priority, labels, task=TASK_DETECT_PAGE)
        except Exception:
            pages.unpublish(settings.catalog_url, [page.page_id for page in chosen])
            raise
        name = chosen[0].campaign_name
        result.by_campaign[name] = result.by_campaign.get(name, 0) + len(labels)
        sent += len(labels)
    result.sent += sent
    return sent


def _scan_priorities(url: str, queue: str) -> list[int]:
    query = select(_CAMPAIGN.c.priority).where(_CAMPAIGN.c.queue == queue, _has_pending_scan()).distinct()
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(query).scalars(), reverse=True)


def top_up(settings: Settings, queue: str) -> TopUp:
    """Publish pending shards of ``queue`` while fewer than the low-water mark wait ahead of them."""
    url = settings.catalog_url
    return _fill(
        settings, queue, lambda: _pending_priorities(url, queue), lambda p, room, result: _publish_next(settings, queue, p, room, result)
    )


Publish = Callable[[int, int, TopUp], int]  # (priority, room, result) -> messages sent


def _fill(settings: Settings, target: str, priorities: Callable[[], list[int]], publish: Publish) -> TopUp:
    """One top-up of the Redis queue ``target``, under its lock: for each priority (most urgent first)
    whose messages ahead are under the low-water mark, ``publish`` up to the high-water mark."""
    import redis

    client = redis.Redis.from_url(require_redis(settings), socket_connect_timeout=5, socket_timeout=30)
    lock = client.lock(f"pisar:feeder:{target}", timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        client.close()
        return TopUp(target, busy=True)
    try:
        waiting = waiting_by_priority(client, target)
        result = TopUp(target, waiting=sum(waiting.values()))
        sent_ahead = 0  # every message sent so far is of this priority or a more urgent one
        for priority in priorities():
            ahead = sum(n for p, n in waiting.items() if p >= priority) + sent_ahead
            if ahead >= settings.queue_low_water:
                continue
            sent_ahead += publish(priority, settings.queue_high_water - ahead, result)
        return result
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # it expired during a very slow top-up; harmless
            log.warning("feeder lock of queue %s expired before release", target)
        client.close()


def _pending_priorities(url: str, queue: str) -> list[int]:
    """The priorities of campaigns on ``queue`` that have pending shards, most urgent first."""
    query = select(_CAMPAIGN.c.priority).where(_CAMPAIGN.c.queue == queue, _has_pending()).distinct()
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(query).scalars(), reverse=True)


def _publish_next(settings: Settings, queue: str, priority: int, room: int, result: TopUp) -> int:
    """Move up to ``room`` pending shards of one priority to ``queued`` and send them; returns how many were sent.

    If sending fails, the shards that were not sent go back to pending.
    """
    picked = shards.publish_next(settings.catalog_url, queue, priority, room)
    by_campaign: dict[int, list[tuple[int, str]]] = defaultdict(list)
    names = {}
    for shard in picked:
        by_campaign[shard.campaign_id].append((shard.shard_id, shard_label(shard.campaign_name, shard.index, shard.line_count)))
        names[shard.campaign_id] = shard.campaign_name
    sent = 0
    for campaign_id, labels in by_campaign.items():
        try:
            send(settings, campaign_id, queue, priority, labels)
        except Exception:
            shards.unpublish(settings.catalog_url, [shard.shard_id for shard in picked][sent:])
            raise
        sent += len(labels)
        result.by_campaign[names[campaign_id]] = result.by_campaign.get(names[campaign_id], 0) + len(labels)
    result.sent += sent
    return sent


def describe_published(fed: list[TopUp], campaign: Campaign, wanted: int | None = None) -> str:
    """``"12 published to 'q'"`` over these top-ups, and who publishes the rest (of ``wanted``,
    default every shard) when the window is full."""
    sent = sum(f.by_campaign.get(campaign.name, 0) for f in fed)
    text = f"{sent} published to '{campaign.queue}'"
    last = fed[-1]
    if last.busy:
        return text + " (a running `pisar feed` publishes the rest)"
    if sent < (campaign.shard_count if wanted is None else wanted):
        text += f"; `pisar feed` publishes the rest as workers drain the queue ({last.waiting + last.sent} waiting now)"
    return text
