"""Back-pressure: Redis holds a bounded window of shard messages; the rest wait in the catalog.

A 100 M-line campaign is ~400,000 shards, ~510 MB of Redis if published at once (1.3 kB per
queued message, `bench/listing.py`), and Redis must never evict (an evicted message is a lost
shard). So shards start ``pending`` in the catalog and the feeder publishes them in windows:

- per queue and campaign priority, the messages a new one would wait behind ("ahead": those of its
  priority and every more urgent one) are counted in Redis with one pipelined LLEN per list;
- when fewer than the low-water mark are ahead, it publishes pending shards up to the high-water
  mark, most urgent campaign first, then oldest campaign, then shard order.

Redis therefore holds at most the high-water mark per priority in use (flat, whatever the campaign
size), and an urgent campaign's shards go out at once on a list the workers pop first, so it
overtakes a running large campaign after the shards already on a GPU.

It runs in `pisar feed` (a loop every ``feed_interval_seconds``, which also reaps dead workers'
shards), and once at the end of `submit`, `resume` and `retry`, so small campaigns start at once
without it. Two feeders are safe: a Redis lock per queue makes each top-up one at a time, and the
pick of pending shards is a conditional UPDATE.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import and_, select, update

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Shard, ShardState, utcnow
from pisar.producer.campaigns import move_shards
from pisar.producer.publish import send, shard_label
from pisar.queue import require_redis, waiting_by_priority
from pisar.settings import Settings

log = logging.getLogger(__name__)

_SHARD = Shard.__table__
_CAMPAIGN = Campaign.__table__
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


def release(url: str, campaign_id: int, shard_ids: Iterable[int], reset_attempts: bool) -> int:
    """Put shards back in line as ``pending`` for the feeder (resume, retry); a live worker's shard is left alone."""
    return move_shards(url, campaign_id, shard_ids, {"state": ShardState.PENDING.value}, reset_attempts)


def _has_pending():  # noqa: ANN202 - a SQLAlchemy EXISTS clause
    """The campaign has a shard waiting for the feeder (answered from the partial index on pending shards)."""
    return select(_SHARD.c.id).where(_SHARD.c.campaign_id == _CAMPAIGN.c.id, _SHARD.c.state == ShardState.PENDING.value).exists()


def queues_with_pending(url: str) -> list[str]:
    """Every queue that has a pending shard waiting for the feeder."""
    query = select(_CAMPAIGN.c.queue).where(_has_pending()).distinct()
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(query).scalars())


def feed(settings: Settings) -> list[TopUp]:
    """Top up every queue that has pending shards; what each top-up did."""
    return [top_up(settings, queue) for queue in queues_with_pending(settings.catalog_url)]


def top_up(settings: Settings, queue: str) -> TopUp:
    """Publish pending shards of ``queue`` while fewer than the low-water mark wait ahead of them."""
    import redis

    client = redis.Redis.from_url(require_redis(settings), socket_connect_timeout=5, socket_timeout=30)
    lock = client.lock(f"pisar:feeder:{queue}", timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        client.close()
        return TopUp(queue, busy=True)
    try:
        waiting = waiting_by_priority(client, queue)
        result = TopUp(queue, waiting=sum(waiting.values()))
        sent_ahead = 0  # every shard sent so far is of this priority or a more urgent one
        for priority in _pending_priorities(settings.catalog_url, queue):
            ahead = sum(n for p, n in waiting.items() if p >= priority) + sent_ahead
            if ahead >= settings.queue_low_water:
                continue
            sent = _publish_next(settings, queue, priority, settings.queue_high_water - ahead, result)
            sent_ahead += sent
        return result
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # it expired during a very slow top-up; harmless
            log.warning("feeder lock of queue %s expired before release", queue)
        client.close()


def _pending_priorities(url: str, queue: str) -> list[int]:
    """The priorities of campaigns on ``queue`` that have pending shards, most urgent first."""
    query = select(_CAMPAIGN.c.priority).where(_CAMPAIGN.c.queue == queue, _has_pending()).distinct()
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(query).scalars(), reverse=True)


def _publish_next(settings: Settings, queue: str, priority: int, room: int, result: TopUp) -> int:
    """Move up to ``room`` pending shards of one priority to ``queued`` and send them; returns how many were sent.

    The catalog says queued before the message exists, so a fast worker's claim is never
    overwritten; if sending fails, the shards that were not sent go back to pending.
    """
    picked = pick_pending(settings.catalog_url, queue, priority, room)
    by_campaign: dict[int, list[tuple[int, str]]] = defaultdict(list)
    names = {}
    for shard_id, campaign_id, name, index, lines in picked:
        by_campaign[campaign_id].append((shard_id, shard_label(name, index, lines)))
        names[campaign_id] = name
    sent = 0
    for campaign_id, labels in by_campaign.items():
        try:
            send(settings, campaign_id, queue, priority, labels)
        except Exception:
            unsent = [shard_id for shard_id, *_ in picked][sent:]
            _back_to_pending(settings.catalog_url, unsent)
            raise
        sent += len(labels)
        result.by_campaign[names[campaign_id]] = result.by_campaign.get(names[campaign_id], 0) + len(labels)
    result.sent += sent
    return sent


def pick_pending(url: str, queue: str, priority: int, limit: int) -> list[tuple[int, int, str, int, int]]:
    """Mark the next ``limit`` pending shards of ``queue`` at ``priority`` queued: oldest campaign, then shard order.

    Returns ``(shard_id, campaign_id, campaign_name, index, line_count)`` in that order.
    """
    if limit <= 0:
        return []
    candidates = (
        select(_SHARD.c.id)
        .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
        .where(_CAMPAIGN.c.queue == queue, _CAMPAIGN.c.priority == priority, _SHARD.c.state == ShardState.PENDING.value)
        .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
        .limit(limit)
        .with_for_update(of=_SHARD, skip_locked=True)
    )
    with get_engine(url).begin() as conn:
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return []
        conn.execute(
            update(_SHARD)
            .where(and_(_SHARD.c.id.in_(ids), _SHARD.c.state == ShardState.PENDING.value))
            .values(state=ShardState.QUEUED.value, queued_at=utcnow())
        )
        rows = conn.execute(
            select(_SHARD.c.id, _SHARD.c.campaign_id, _CAMPAIGN.c.name, _SHARD.c.index, _SHARD.c.line_count)
            .join(_CAMPAIGN, _CAMPAIGN.c.id == _SHARD.c.campaign_id)
            .where(_SHARD.c.id.in_(ids))
            .order_by(_SHARD.c.campaign_id, _SHARD.c.index)
        ).all()
    return [tuple(row) for row in rows]


def _back_to_pending(url: str, shard_ids: list[int]) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(
            update(_SHARD)
            .where(_SHARD.c.id.in_(shard_ids), _SHARD.c.state == ShardState.QUEUED.value)
            .values(state=ShardState.PENDING.value)
        )
