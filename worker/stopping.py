"""Warm shutdown with a deadline: a stopping worker finishes its shard, or gives it back in time.

Docker and Kubernetes stop a container with SIGTERM, wait their grace period, then SIGKILL.
Celery's warm shutdown waits for the running task without a limit, so a long shard would be killed
mid-run and its lease would hold it for up to ``PISAR_LEASE_SECONDS``. Here the worker's parent
tells its pool child when the shutdown began (SIGUSR2); a child past the give-back point stops
before its next batch, releases the shard (attempt not counted) and sends it again, so another
worker takes it at once. The platform's grace period is ``PISAR_STOP_TIMEOUT_SECONDS``.

A worker that cannot serve (``FatalError``: no device, a model that will not load) stops the same
way, on its own: its pool child releases the shard, sends its message again and signals the parent
(``CANNOT_SERVE_SIGNAL``), which records it in its own ``this_node`` (``worker/serving.py``),
stops consuming, shuts down warm and exits with ``FatalError.exit_code``, so compose's restart
policy or Kubernetes decides what comes next.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from pisar.errors import FatalError
from pisar.worker.serving import this_node

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR2  # parent -> pool child: a warm shutdown began
CANNOT_SERVE_SIGNAL = signal.SIGRTMIN + 1  # pool child -> parent: this node cannot serve, stop taking work
_give_back_at: float | None = None  # monotonic time, set in a pool child once its parent is stopping
_pool: Any = None  # the parent's Celery TaskPool, once the worker is ready


class WorkerStopping(Exception):
    """The worker is shutting down and its grace period is nearly spent: hand the shard back."""


def give_back_after(stop_timeout: float) -> float:
    """Seconds after SIGTERM when a running shard is given back: the timeout less a margin for the release."""
    return stop_timeout - min(30.0, stop_timeout / 10)


def check() -> None:
    """Raise ``WorkerStopping`` once the give-back point has passed; called between batches."""
    if _give_back_at is not None and time.monotonic() >= _give_back_at:
        raise WorkerStopping("the worker is stopping and its grace period is nearly spent")


def install_parent() -> None:
    """In ``pisar worker``'s parent, before the pool forks: forward the start of a warm shutdown to the children.

    SIGUSR2 is ignored in the parent, and so in a child until it installs its own handler: a child
    that is still starting up cannot be killed by it.
    """
    from celery.signals import worker_ready, worker_shutting_down

    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    signal.signal(CANNOT_SERVE_SIGNAL, _stop_consuming)
    worker_ready.connect(_remember_pool, weak=False)
    worker_shutting_down.connect(_tell_children, weak=False)


def tell_parent(reason: FatalError) -> None:
    """In a pool child that cannot serve: ask the parent to stop consuming and exit non-zero."""
    os.kill(os.getppid(), CANNOT_SERVE_SIGNAL)


def _stop_consuming(signum: int, frame: Any) -> None:  # signal handler signature
    """Celery's own warm shutdown, with the exit code of a node that cannot serve."""
    from celery.worker import state

    this_node.cannot_serve(FatalError("a pool process of this worker cannot serve"), announce=False)
    state.should_stop = this_node.exit_code()


def install_child(stop_timeout: float) -> None:
    """In a pool child: on the parent's word, start counting down to the give-back point; tell the
    parent when this process finds it cannot serve."""
    signal.signal(CANNOT_SERVE_SIGNAL, signal.SIG_IGN)  # the parent's handler is not the child's
    this_node.when_failed(tell_parent)

    def started_stopping(signum: int, frame: Any) -> None:  # signal handler signature
        global _give_back_at
        if _give_back_at is None:
            _give_back_at = time.monotonic() + give_back_after(stop_timeout)
            log.info("worker stopping: a running shard has %.0fs to finish before it is given back", give_back_after(stop_timeout))

    signal.signal(STOP_SIGNAL, started_stopping)


def _remember_pool(sender: Any = None, **_: Any) -> None:
    global _pool
    _pool = getattr(sender, "pool", None)


def _tell_children(how: str = "", **_: Any) -> None:
    if how != "Warm" or _pool is None:
        return
    for pid in _pool.info.get("processes", []):
        try:
            os.kill(pid, STOP_SIGNAL)
        except ProcessLookupError:
            pass
