"""The lease heartbeat: a running shard's (or scan's) lease is renewed while its worker lives.

Leases can then be short (``lease_seconds``, a minute by default), so a killed worker's shard is reclaimed
quickly, yet a shard that takes longer than one lease is never taken from a live worker. The
heartbeat runs in a thread because ``generate()`` holds the worker's main thread for seconds at a
time; torch releases the GIL while it computes, so the beat keeps time.

The beat goes on through the commit, but only for the commit's timeout (``renew_for``): a worker
whose commit hangs for longer stops holding its shard, and the reaper gives it to another.

One heartbeat serves both units of work: a shard (``for_shard``: ``shards.renew``) and a scan being
detected (``for_scan``: ``pages.renew``); each module keeps its own table's leases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

from pisar.catalog import pages, shards
from pisar.catalog.pages import PageClaim
from pisar.catalog.shards import Claim
from pisar.errors import is_outage

log = logging.getLogger(__name__)


OUTAGE_BEAT_SECONDS = 2.0


class LeaseLost(Exception):
    """A newer claim holds the shard: this run's results would be fenced off, so it stops early."""


class LeaseKeeper:
    """Calls ``renew`` every third of the lease until closed; ``lost`` is set once it says a newer claim holds the unit.

    ``renew`` renews the lease of what ``name`` names and answers whether this run still holds it.
    """

    def __init__(self, renew: Callable[[], bool], name: str, lease_seconds: int, interval: float | None = None) -> None:
        self.renew, self.name = renew, name
        self.interval = interval if interval is not None else lease_seconds / 3
        self.lost = threading.Event()
        self._until: float | None = None  # monotonic time after which the beat stops renewing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"pisar-lease-{name}", daemon=True)

    @classmethod
    def for_shard(cls, url: str, held: Claim, lease_seconds: int, interval: float | None = None) -> LeaseKeeper:
        return cls(partial(shards.renew, url, held, lease_seconds), held.name, lease_seconds, interval)

    @classmethod
    def for_scan(cls, url: str, held: PageClaim, lease_seconds: int) -> LeaseKeeper:
        return cls(partial(pages.renew, url, held, lease_seconds), held.key, lease_seconds)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise ``LeaseLost`` if the heartbeat found the shard taken; called between batches."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.name} was claimed again by another worker")

    def renew_for(self, seconds: float) -> None:
        """Keep renewing for at most ``seconds`` more (the commit's timeout), then let the lease run out."""
        self._until = time.monotonic() + seconds

    def _beat(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            if self._until is not None and time.monotonic() > self._until:
                log.warning("%s: the commit outlasted its timeout; the lease is no longer renewed", self.name)
                return
            try:
                if not self.renew():
                    if not self._stop.is_set():  # (a beat that lands just after this run's own commit finds it done)
                        log.warning("%s: the lease is no longer this run's (a newer claim, or its commit)", self.name)
                    self.lost.set()
                    return
                wait = self.interval
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # A catalog outage: nobody can claim the shard meanwhile, but once the catalog is back a
                # reaper or a returning message could take it if its lease ran out. Beats come every
                # OUTAGE_BEAT_SECONDS until one lands, so the lease is renewed within seconds of the
                # catalog's return, well before a reaper's pass (PISAR_REAP_INTERVAL_SECONDS).
                wait = min(self.interval, OUTAGE_BEAT_SECONDS)
                log.warning("%s: lease renewal failed (%s); retrying in %.0fs", self.name, type(exc).__name__, wait)
