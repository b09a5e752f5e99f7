"""The lease heartbeat: a running shard's lease is renewed while its worker lives.

Leases can then be short (``lease_seconds``, a minute by default), so a killed worker's shard is reclaimed
quickly, yet a shard that takes longer than one lease is never taken from a live worker. The
heartbeat runs in a thread because ``generate()`` holds the worker's main thread for seconds at a
time; torch releases the GIL while it computes, so the beat keeps time.

The beat goes on through the commit, but only for the commit's timeout (``renew_for``): a worker
whose commit hangs for longer stops holding its shard, and the reaper gives it to another.
"""

from __future__ import annotations

import logging
import threading
import time

from pisar.catalog import shards
from pisar.catalog.shards import Claim
from pisar.errors import is_outage

log = logging.getLogger(__name__)


OUTAGE_BEAT_SECONDS = 2.0


class LeaseLost(Exception):
    """A newer claim holds the shard: this run's results would be fenced off, so it stops early."""


class LeaseKeeper:
    """Renews ``held`` every third of the lease until closed; ``lost`` is set if a newer claim took it."""

    def __init__(self, url: str, held: Claim, lease_seconds: int, interval: float | None = None) -> None:
        self.url, self.held, self.lease_seconds = url, held, lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        self.lost = threading.Event()
        self._until: float | None = None  # monotonic time after which the beat stops renewing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"pisar-lease-{held.shard_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise ``LeaseLost`` if the heartbeat found the shard taken; called between batches."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.held.name} was claimed again by another worker")

    def renew_for(self, seconds: float) -> None:
        """Keep renewing for at most ``seconds`` more (the commit's timeout), then let the lease run out."""
        self._until = time.monotonic() + seconds

    def _beat(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            if self._until is not None and time.monotonic() > self._until:
                log.warning("%s: the commit outlasted its timeout; the lease is no longer renewed", self.held.name)
                return
            try:
                if not shards.renew(self.url, self.held, self.lease_seconds):
                    if not self._stop.is_set():  # (a beat that lands just after this run's own commit finds it done)
                        log.warning("%s: the lease is no longer this run's (a newer claim, or its commit)", self.held.name)
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
                log.warning("%s: lease renewal failed (%s); retrying in %.0fs", self.held.name, type(exc).__name__, wait)
