"""Whether this node can serve: one object that the task, the shard runner and the shutdown path read.

A node cannot serve when its failure is its own, not a shard's (``FatalError``: no device, a model
that will not load, a catalog it may not use). The first such failure is kept; from then on the
runner gives every shard it is handed back at once, the Celery task passes messages on untouched,
and the worker stops taking work and exits with ``FatalError.exit_code`` (``worker/stopping.py``
carries the word from the pool child to the parent, which owns the exit code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pisar.errors import FatalError

log = logging.getLogger(__name__)


class NodeHealth:
    """This node's one verdict: serving, or the ``FatalError`` that stopped it."""

    def __init__(self) -> None:
        self.reason: FatalError | None = None
        self._on_failure: list[Callable[[FatalError], None]] = []

    @property
    def serving(self) -> bool:
        return self.reason is None

    def cannot_serve(self, reason: FatalError, *, announce: bool = True) -> None:
        """Record that this node cannot serve; the first reason is kept and, with ``announce``, logged once.

        A signal handler passes ``announce=False``: logging there could re-enter a stream the
        interrupted code was writing (and the process that found the failure has logged it)."""
        if self.reason is not None:
            return
        self.reason = reason
        if announce:
            log.error("this worker cannot serve: %s; it stops taking work", reason)
        for listener in self._on_failure:
            listener(reason)

    def when_failed(self, listener: Callable[[FatalError], None]) -> None:
        """Call ``listener`` once, when this node is found unable to serve (the pool child tells its parent)."""
        self._on_failure.append(listener)

    def exit_code(self) -> int:
        """The process's exit status: ``FatalError.exit_code`` once it cannot serve, else 0."""
        return 0 if self.reason is None else FatalError.exit_code


#: This process's node: the Celery pool child's runner and task, and the worker parent, read it.
this_node = NodeHealth()
