"""Ctrl-C and SIGTERM as a request to stop between two passes of a loop, never inside one.

A KeyboardInterrupt raised inside a catalog query cancels it and resets the pooled connection,
which can take seconds. And `docker stop` and Kubernetes send SIGTERM: a container's PID 1 that
does not handle it ignores it and is killed at the end of the grace period.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_requested(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[threading.Event]:
    """An event that ``signals`` set while the block runs; loops wait on it instead of sleeping."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
