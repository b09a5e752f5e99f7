"""Celery wiring, kept thin: process setup, the ``run_shard`` task, and what each outcome asks of its message.

One prefork child per GPU (concurrency 1): the child builds its engine and database pool
after the fork, so the parent never touches CUDA or shares sockets with it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_init

from pisar.catalog.db import dispose_engines
from pisar.constants import TASK_RUN_SHARD
from pisar.errors import FatalError
from pisar.queue import app
from pisar.settings import get_settings
from pisar.worker import metrics, stopping
from pisar.worker.process_settings import apply_process_settings
from pisar.worker.shard import Outcome, ShardRunner

if TYPE_CHECKING:
    from pisar.worker.engine import EngineCache

log = logging.getLogger("pisar.worker")

_engines: EngineCache | None = None
_runner: ShardRunner | None = None
_cannot_serve: FatalError | None = None  # the preload model failed in this process: it takes no shard


def engines() -> EngineCache:
    """This process's model cache (one model at a time)."""
    global _engines
    if _engines is None:
        from pisar.worker.engine import EngineCache  # torch: in the pool child only, never in the parent that forks it

        _engines = EngineCache.from_settings(get_settings())
    return _engines


def runner(hostname: str) -> ShardRunner:
    """This process's shard runner, built on first use (after the fork)."""
    global _runner
    if _runner is None:
        _runner = ShardRunner(get_settings(), engines(), worker=f"{hostname}:{os.getpid()}")
    return _runner


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """Fresh database pool, process settings; preload ``PISAR_MODEL`` if set (a failure stops the worker)."""
    global _cannot_serve
    settings = get_settings()
    stopping.install_child(settings.stop_timeout_seconds)
    dispose_engines()
    apply_process_settings(settings)
    metrics.serve(settings.metrics_port, settings.metrics_bind)
    if settings.model:
        from pisar import model_ref

        try:
            engines().get(model_ref.resolve(model_ref.parse(settings.model)), settings.dtype)
        except FatalError as exc:
            _cannot_serve = exc
            log.error("this worker cannot serve: %s; it stops taking work", exc)
            stopping.stop_taking_work()


# max_retries=None on the task: Celery reads retry(max_retries=None) as "the default (3)", which
# dropped the message of a shard after a catalog outage longer than three retry intervals.
@app.task(name=TASK_RUN_SHARD, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_shard(self: Any, campaign_id: int, shard_id: int) -> None:
    """Transcribe one shard; the catalog records the outcome, the message is sent again when the outcome asks."""
    if _cannot_serve is not None:  # reached this process before its worker stopped consuming: pass it on untouched
        raise self.retry(countdown=0)
    outcome = runner(self.request.hostname or "pisar").run(campaign_id, shard_id)
    if outcome.outcome is Outcome.BROKEN:
        log.error("this worker cannot serve: %s; it stops taking work", outcome.error)
        stopping.stop_taking_work()
    delay = outcome.resend_after(get_settings())
    if delay is not None:
        raise self.retry(countdown=delay)
