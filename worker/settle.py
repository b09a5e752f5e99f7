"""Recording a held unit's end through a catalog outage: a shard's or a scan's release or failure.

A worker that loses the catalog at the moment it gives a unit back (an outage, a stop) retries the
move with backoff for up to one lease. Past that the lease has expired and the reaper (or the next
claim) moves the unit instead, so giving up then loses nothing: the unit still ends in a recorded state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pisar.errors import is_outage

log = logging.getLogger(__name__)
T = TypeVar("T")


def settle(move: Callable[[], T], lease_seconds: float, what: str) -> T | None:
    """``move()``, retried through a catalog outage for up to ``lease_seconds``; ``None`` if it never landed."""
    deadline = time.monotonic() + lease_seconds
    wait = 0.5
    while True:
        try:
            return move()
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() + wait > deadline:
                log.error("cannot record %s's state (%s: %s); its lease will expire and the reaper moves it", what, type(exc).__name__, exc)
                return None
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
