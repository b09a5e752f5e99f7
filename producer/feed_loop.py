"""The `pisar feed` loop: reap dead workers' shards on their schedule, top every queue up, outlive outages.

One per deployment (the compose ``feeder`` service); a second is harmless. An outage of Redis or
the catalog is one line and the loop goes on; the heartbeat file is touched after every pass, so a
container healthcheck fails only when the loop itself is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from threading import Event

from pisar.catalog import pages, shards
from pisar.errors import ServiceUnavailable
from pisar.producer.feeder import feed
from pisar.safe_text import printable
from pisar.settings import Settings

Say = Callable[[str], None]


def outages() -> tuple[type[BaseException], ...]:
    """What the loop outlives: the broker or the catalog unreachable."""
    import redis
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (redis.RedisError, OperationalError, InterfaceError, ServiceUnavailable, ConnectionError)


def feed_forever(settings: Settings, stop: Event, say: Say, *, once: bool = False, heartbeat: Path | None = None) -> None:
    """Pass after pass until ``stop`` is set (``once``: one pass, and an outage is raised, not outlived)."""
    next_reap = 0.0
    survivable = outages()
    while True:
        try:
            if time.monotonic() >= next_reap:
                reap_once(settings, say)
                next_reap = time.monotonic() + settings.reap_interval_seconds
            for fed in feed(settings):
                if fed.sent:
                    say(fed.describe())
        except survivable as exc:
            if once:
                raise
            reason = printable(str(exc).splitlines()[0] if str(exc) else "")
            say(f"feed: {type(exc).__name__}: {reason}; retrying")
        if heartbeat is not None:  # the loop is alive, outage or not: the outage is Redis's or the catalog's
            heartbeat.touch()
        if once or stop.wait(settings.feed_interval_seconds):
            return


def reap_once(settings: Settings, say: Say) -> shards.Expired:
    """Shards whose lease expired go back in line (the same pass publishes them) or to quarantine."""
    reaped = shards.expire_leases(settings.catalog_url, settings.max_attempts)
    scans = pages.expire_leases(settings.catalog_url)
    if scans:
        say(f"reaped {scans} scans back in line for detection: their workers' leases ran out")
    for key in reaped.poisoned:
        say(f"set aside {printable(key)}: its worker died reading it (WorkerCrash)")
    if reaped.returned or reaped.quarantined:
        say(f"reaped {len(reaped.returned)} shards back in line, quarantined {len(reaped.quarantined)}")
    return reaped
