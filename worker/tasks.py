"""Celery wiring, kept thin: process setup, the ``run_shard`` and ``detect_page`` tasks, and what each outcome asks of its message.

One prefork child per GPU (concurrency 1): the child builds its reader and database pool
after the fork, so the parent never touches CUDA or shares sockets with it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_init

from pisar.catalog.db import dispose_engines
from pisar.constants import TASK_DETECT_PAGE, TASK_RUN_SHARD
from pisar.errors import FatalError
from pisar.queue import app
from pisar.settings import get_settings
from pisar.worker import metrics, stopping
from pisar.worker.runner import ShardRunner
from pisar.worker.serving import this_node

if TYPE_CHECKING:
    from pisar.reader import ReaderCache
    from pisar.worker.detection import PageRunner

log = logging.getLogger("pisar.worker")

_readers: ReaderCache | None = None
_runner: ShardRunner | None = None
_page_runner: PageRunner | None = None


def readers() -> ReaderCache:
    """This process's reader cache (one model at a time)."""
    global _readers
    if _readers is None:
        from pisar.reader import ReaderCache

        _readers = ReaderCache.from_settings(get_settings())
    return _readers


def runner(hostname: str) -> ShardRunner:
    """This process's shard runner, built on first use (after the fork); it reports to ``this_node``."""
    global _runner
    if _runner is None:
        _runner = ShardRunner(get_settings(), readers().get, worker=f"{hostname}:{os.getpid()}", node=this_node)
    return _runner


def page_runner(hostname: str) -> PageRunner:
    """This process's scan runner; its detector loads with the first scan (after the fork)."""
    global _page_runner
    if _page_runner is None:
        from pisar.worker.detection import PageRunner, detector_from_settings

        settings = get_settings()
        _page_runner = PageRunner(
            settings, lambda name: detector_from_settings(settings, name), worker=f"{hostname}:{os.getpid()}", node=this_node
        )
    return _page_runner


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """Fresh database pool; stop signals wired; preload ``PISAR_MODEL`` if set (a failure stops the worker).

    The process settings (``worker/process_settings.py``) are the runner's to apply, once, when it is built.
    """
    settings = get_settings()
    stopping.install_child(settings.stop_timeout_seconds)
    dispose_engines()
    metrics.serve(settings.metrics_port, settings.metrics_bind)
    if settings.model:
        from pisar import model_ref

        try:
            readers().get(model_ref.resolve(model_ref.parse(settings.model)), settings.dtype)
        except FatalError as exc:
            this_node.cannot_serve(exc)


# max_retries=None on the task: Celery reads retry(max_retries=None) as "the default (3)", which
# dropped the message of a shard after a catalog outage longer than three retry intervals.
@app.task(name=TASK_RUN_SHARD, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_shard(self: Any, campaign_id: int, shard_id: int) -> None:
    """Transcribe one shard; the catalog records the outcome, the message is sent again when the outcome asks."""
    if not this_node.serving:  # reached this process before its worker stopped consuming: pass it on untouched
        raise self.retry(countdown=0)
    outcome = runner(self.request.hostname or "pisar").run(campaign_id, shard_id)
    delay = outcome.resend_after(get_settings())
    if delay is not None:
        raise self.retry(countdown=delay)


@app.task(name=TASK_DETECT_PAGE, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def detect_page(self: Any, campaign_id: int, page_id: int) -> None:
    """Detect one scan's lines; the catalog records the outcome (and moves its read shard on), the
    message is sent again when the outcome asks."""
    if not this_node.serving:
        raise self.retry(countdown=0)
    outcome = page_runner(self.request.hostname or "pisar").run(page_id)
    delay = outcome.resend_after(get_settings())
    if delay is not None:
        raise self.retry(countdown=delay)
