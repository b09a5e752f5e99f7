"""`pisar metrics`: a Prometheus exporter for what no single worker knows: queues and the catalog.

Each scrape reads Redis (the depth of every campaign's queue, and the messages delivered but not
yet acknowledged) and the catalog (shards per state, lines per status, per campaign). Worker-side
figures (lines read, stage seconds, batch sizes) come from each worker (``worker/metrics.py``).
Flower's own ``/metrics`` knows only the tasks it saw since it started; these survive restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Shard
from pisar.producer.campaigns import line_counts
from pisar.queue import unacked_keys, waiting_by_priority
from pisar.settings import Settings

log = logging.getLogger(__name__)

_CAMPAIGN = Campaign.__table__
_SHARD = Shard.__table__


class CatalogCollector(Collector):
    """Queue depth from Redis and campaign progress from the catalog, computed at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.catalog_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        shards = GaugeMetricFamily("pisar_campaign_shards", "Shards per state, per campaign", labels=["campaign", "state"])
        lines = GaugeMetricFamily("pisar_campaign_lines", "Lines per status, per campaign", labels=["campaign", "status"])
        with get_engine(self.url).connect() as conn:
            names = dict(conn.execute(select(_CAMPAIGN.c.id, _CAMPAIGN.c.name)).all())
            queues = set(conn.execute(select(_CAMPAIGN.c.queue).distinct()).scalars()) | {self.settings.queue}
            for campaign_id, state, count in conn.execute(
                select(_SHARD.c.campaign_id, _SHARD.c.state, func.count()).group_by(_SHARD.c.campaign_id, _SHARD.c.state)
            ):
                shards.add_metric([names[campaign_id], state], count)
            for campaign_id, counts in line_counts(conn).items():  # per-shard counters: a scrape never scans lines
                for status, count in counts.items():
                    lines.add_metric([names[campaign_id], status], count)
        yield shards
        yield lines
        yield from self._queues(sorted(queues))

    def _queues(self, queues: list[str]) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("pisar_queue_depth", "Shard messages waiting in each Redis queue", labels=["queue"])
        unacked = GaugeMetricFamily(
            "pisar_queue_unacked", "Messages delivered to the workers of each queue and not yet acknowledged", labels=["queue"]
        )
        up = GaugeMetricFamily("pisar_broker_up", "1 when Redis answered this scrape")
        if not self.settings.redis_url:
            up.add_metric([], 0)
            yield up
            return
        import redis

        client: Any = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
        try:
            for queue in queues:
                depth.add_metric([queue], sum(waiting_by_priority(client, queue).values()))
                unacked.add_metric([queue], client.zcard(unacked_keys(queue)["unacked_index_key"]))
            up.add_metric([], 1)
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        finally:
            client.close()
        yield depth
        yield unacked
        yield up
