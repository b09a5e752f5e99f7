"""Celery wiring, kept thin: process setup, the ``run_shard`` task, retries with backoff.

One prefork child per GPU (concurrency 1): the child builds its engine and database pool
after the fork, so the parent never touches CUDA or shares sockets with it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init

from pisar.catalog.db import dispose_engines
from pisar.constants import TASK_RUN_SHARD
from pisar.queue import app
from pisar.settings import get_settings
from pisar.worker import metrics, stopping
from pisar.worker.engine import EngineCache, apply_process_settings
from pisar.worker.shard import ShardRunner

log = logging.getLogger("pisar.worker")

_engines: EngineCache | None = None
_runner: ShardRunner | None = None


def engines() -> EngineCache:
    """This process's model cache (one model at a time)."""
    global _engines
    if _engines is None:
        _engines = EngineCache(get_settings().device)
    return _engines


def runner(hostname: str) -> ShardRunner:
    """This process's shard runner, built on first use (after the fork)."""
    global _runner
    if _runner is None:
        _runner = ShardRunner(get_settings(), engines(), worker=f"{hostname}:{os.getpid()}")
    return _runner


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """Fresh database pool, process settings; preload ``PISAR_MODEL`` if set."""
    settings = get_settings()
    stopping.install_child(settings.stop_timeout_seconds)
    dispose_engines()
    apply_process_settings(settings)
    metrics.serve(settings.metrics_port)
    if settings.model:
        from pisar import model_ref

        engines().get(model_ref.resolve(model_ref.parse(settings.model)), settings.dtype)


def retry_delay(attempts: int) -> int:
    """Seconds before a failed shard is tried again: 5, 10, 20, ... capped at 5 minutes."""
    return min(300, 5 * 2 ** max(0, attempts - 1))


# max_retries=None on the task: Celery reads retry(max_retries=None) as "the default (3)", which
# dropped the message of a shard after a catalog outage longer than three retry intervals.
@app.task(name=TASK_RUN_SHARD, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_shard(self: Any, campaign_id: int, shard_id: int) -> None:
    """Transcribe one shard; the catalog records the outcome, the return value is ignored."""
    from sqlalchemy.exc import DBAPIError

    try:
        outcome = runner(self.request.hostname or "pisar").run(campaign_id, shard_id)
    except DBAPIError as exc:
        # The catalog is down: keep the message alive (a failed task would be acked and dropped).
        # A shard claimed before the outage keeps its lease until it expires; the reaper re-queues it.
        wait = get_settings().outage_retry_seconds
        log.warning("shard %s: catalog unreachable (%s); retrying in %ss", shard_id, exc.__class__.__name__, wait)
        raise self.retry(countdown=wait) from None
    if outcome.state == "stopped":  # this worker is stopping; the shard was released: send it again now
        raise self.retry(countdown=0)
    if outcome.state == "stalled":  # the object store is unreachable; the shard was released
        raise self.retry(countdown=get_settings().outage_retry_seconds)
    if outcome.retryable:
        raise self.retry(countdown=retry_delay(outcome.attempts))
