"""Redelivery stays within a queue: workers on one Redis with different visibility timeouts.

kombu's Redis transport keeps the messages a worker holds (acks_late: every running shard, and
every held shard's message waiting for its countdown) in an "unacked" set, and each worker sweeps
that set, sending back whatever has waited longer than *its own* visibility timeout. With kombu's
default keys the set is one per Redis database: a deployment or a test with a 10 s timeout handed
another queue's held messages (waiting up to half of a 6 h timeout) to a second worker. Each
queue now has its own set, so only its own workers, under its own timeout, redeliver its messages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from pisar.producer.metrics import CatalogCollector
from pisar.queue import celery_config, configure, unacked_keys
from pisar.settings import Settings


@pytest.fixture
def queues(redis_service) -> Iterator[tuple[str, str]]:
    """Two queues of this test's own; their lists and unacked sets are deleted afterwards."""
    names = (f"pisar-test-{uuid.uuid4().hex[:10]}", f"pisar-test-{uuid.uuid4().hex[:10]}")
    yield names
    client = redis.Redis.from_url(redis_service.url)
    client.delete(*names, *(key for name in names for key in unacked_keys(name).values()))
    client.close()


def broker(url: str, queue: str, visibility_timeout: int) -> Connection:
    """A kombu connection with the transport options a Pisar worker of ``queue`` gets, its timeout
    shortened below the settings' 10 s floor so that the test waits a second, not ten."""
    options = celery_config(Settings(redis_url=url, queue=queue))["broker_transport_options"]
    return Connection(url, transport_options={**options, "visibility_timeout": visibility_timeout})


def unacked_metric(redis_url: str, catalog_url: str, queue: str) -> float:
    """``pisar_queue_unacked{queue}`` as `pisar metrics` exports it."""
    collector = CatalogCollector(Settings(redis_url=redis_url, database_url=catalog_url, queue=queue))
    family = next(f for f in collector.collect() if f.name == "pisar_queue_unacked")
    return next(s.value for s in family.samples if s.labels == {"queue": queue})


def test_a_short_visibility_timeout_elsewhere_leaves_a_held_message_alone(
    redis_service, postgres_url: str, queues: tuple[str, str]
) -> None:
    patient, hasty = queues
    client = redis.Redis.from_url(redis_service.url)
    with broker(redis_service.url, patient, 3600) as holder:
        shard_queue = holder.SimpleQueue(patient)
        shard_queue.put({"shard": 1})
        held = shard_queue.get(timeout=5)  # delivered and not acknowledged, as a running or held shard's message
        assert held.payload == {"shard": 1}
        assert client.zcard(unacked_keys(patient)["unacked_index_key"]) == 1, "held in its own queue's set"
        assert unacked_metric(redis_service.url, postgres_url, patient) == 1, "and counted there by the exporter"
        time.sleep(1.5)  # past the other deployment's 1 s timeout

        with broker(redis_service.url, hasty, 1) as other:
            other.default_channel.qos.restore_visible()  # the sweep a worker of the other queue runs every second
        assert client.llen(patient) == 0, "another queue's sweep sent the held message back"
        assert client.zcard(unacked_keys(patient)["unacked_index_key"]) == 1

        with broker(redis_service.url, patient, 1) as own:  # the control: a sweep of its own queue under 1 s does send it back
            own.default_channel.qos.restore_visible()
        assert client.llen(patient) == 1
        assert client.zcard(unacked_keys(patient)["unacked_index_key"]) == 0
        held.ack()
    client.close()


def test_celery_hands_the_queue_s_keys_to_kombu(redis_service) -> None:
    """The keys above are the ones the worker's channel uses, through Celery's configuration."""
    app = configure(Settings(redis_url=redis_service.url, queue="shards-a"))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert (channel.unacked_key, channel.unacked_index_key, channel.unacked_mutex_key) == tuple(unacked_keys("shards-a").values())
    configure(Settings(redis_url=redis_service.url))  # the shared app back to the default queue's keys
