"""The one Celery app and its settings, shared by producer, worker and Flower.

Redis is transport only: messages carry ``(campaign_id, shard_id)`` and results are ignored;
everything durable is in the catalog.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from pisar.constants import DETECT_QUEUE_SUFFIX, MAX_PRIORITY, TASK_DETECT_PAGE, TASK_RUN_SHARD
from pisar.errors import ConfigError, ServiceUnavailable
from pisar.settings import Settings, redact_url

app = Celery("pisar")

# Campaign priorities, 0 (lowest) to 9 (most urgent). kombu's Redis transport keeps one list per
# priority step (``queue`` for step 0, ``queue + SEP + step`` for the rest) and a worker pops them
# in step order, so step 0 is served first: a campaign's priority p is sent as step 9 - p.
PRIORITY_STEPS = tuple(range(MAX_PRIORITY + 1))
_KOMBU_SEPARATOR = "\x06\x16"  # kombu.transport.redis.Channel.sep


def detect_queue(queue: str) -> str:
    """The queue that carries the scans to detect of the campaigns on ``queue`` (read shards stay on ``queue``)."""
    return f"{queue}{DETECT_QUEUE_SUFFIX}"


def message_priority(campaign_priority: int) -> int:
    """The kombu priority step that carries a campaign of this priority (0 is served first)."""
    return MAX_PRIORITY - campaign_priority


def priority_lists(queue: str) -> list[tuple[int, str]]:
    """``(campaign priority, Redis list name)`` for every list of ``queue``, most urgent first."""
    return [(MAX_PRIORITY - step, queue if step == 0 else f"{queue}{_KOMBU_SEPARATOR}{step}") for step in PRIORITY_STEPS]


def waiting_by_priority(client: Any, queue: str) -> dict[int, int]:
    """Messages waiting in ``queue`` per campaign priority: one pipelined LLEN per list."""
    lists = priority_lists(queue)
    with client.pipeline(transaction=False) as pipe:
        for _, name in lists:
            pipe.llen(name)
        sizes = pipe.execute()
    return {priority: int(size) for (priority, _), size in zip(lists, sizes, strict=True)}


def unacked_keys(queue: str) -> dict[str, str]:
    """kombu's Redis keys for the messages a worker of ``queue`` holds unacknowledged.

    kombu keeps one ``unacked`` set per Redis database by default, and every worker sweeps the
    whole set with its own visibility timeout: a deployment (or a test) with a shorter timeout on
    the same Redis would hand another queue's held messages (a shard waiting for a lease to end)
    to a second worker. One set per queue keeps each queue's redeliveries under its own timeout.
    """
    return {"unacked_key": f"{queue}.unacked", "unacked_index_key": f"{queue}.unacked_index", "unacked_mutex_key": f"{queue}.unacked_mutex"}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings that neither lose nor duplicate work (see ARCHITECTURE.md, rule 5)."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            # kombu sweeps for overdue unacked messages every interval x throttle seconds (100 s by
            # default); one cheap ZRANGE per sweep, so sweep at a tenth of the timeout, 1-10 s.
            "unacked_restore_interval": min(10, max(1, settings.visibility_timeout_seconds // 10)),
            "unacked_restore_throttle": 1,
            "priority_steps": list(PRIORITY_STEPS),  # one Redis list per campaign priority
            **unacked_keys(settings.queue),
        },
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_RUN_SHARD: {"queue": settings.queue}, TASK_DETECT_PAGE: {"queue": detect_queue(settings.queue)}},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def configure(settings: Settings) -> Celery:
    """Apply ``settings`` to the shared app and return it."""
    app.conf.update(celery_config(settings))
    return app


def delivery_problems(conf: Any, settings: Settings) -> list[str]:
    """What in a Celery config would lose or duplicate work; empty when safe."""
    problems = []
    if conf.task_serializer != "json" or set(conf.accept_content or []) - {"json", "application/json"}:
        problems.append("messages must be JSON only (pickle executes code from the broker)")
    if not conf.task_acks_late:
        problems.append("task_acks_late must be on (early acks lose the shard of a killed worker)")
    if not conf.task_reject_on_worker_lost:
        problems.append("task_reject_on_worker_lost must be on")
    if conf.worker_prefetch_multiplier != 1:
        problems.append("worker_prefetch_multiplier must be 1 (prefetched shards wait behind a busy GPU)")
    visibility = (conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    if visibility < settings.lease_seconds:
        problems.append(
            f"visibility_timeout ({visibility}s) must be at least the shard lease ({settings.lease_seconds}s), "
            "or a message that waits for a shard's lease to end would be delivered again meanwhile"
        )
    return problems


def require_redis(settings: Settings) -> str:
    """The broker URL, after a fast ping; one readable line if it is unset or unreachable."""
    if not settings.redis_url:
        raise ConfigError("PISAR_REDIS_URL is not set: distributed mode needs a Redis broker")
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis at {redact_url(settings.redis_url)} is unreachable: {exc}") from None
    finally:
        client.close()
    return settings.redis_url
