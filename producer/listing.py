"""Listing a campaign's source into the catalog: key ranges in parallel, streamed, resumable.

One paginator lists ~12,000 keys/s, so 50 M keys would take over an hour, held in memory, before
the first line is read. Instead the source is split into key ranges (``Storage.key_ranges``: its
sub-folders), and ``list_threads`` threads list them at once, writing as they go:

- the page's image keys join the range's ``carry``; every full shard of them is inserted as a
  pending shard with its lines (psycopg COPY), every 10,000 keys or 2 s, so the feeder can
  publish it at once;
- in the same transaction, the range's row records ``after`` (the last key listed), the rest of the
  carry and the skipped counts, so an interrupted listing resumes from exactly there: nothing
  listed twice, nothing lost.

A range's last shard may be short. Shard indexes follow the order shards are written, not key
order across ranges (a shard's own keys are always consecutive). Only one process lists a
campaign at a time (``pisar/catalog/locks.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from pisar.catalog import locks
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, ListingPart, Page, Shard, utcnow
from pisar.errors import PisarError
from pisar.sources import LineSource, line_source
from pisar.storage import KeyRange, KeySource, describe_skipped

log = logging.getLogger(__name__)

_CAMPAIGN = Campaign.__table__
_SHARD = Shard.__table__
_PART = ListingPart.__table__
_PAGE = Page.__table__
# A range writes its shards every WRITE_KEYS keys or WRITE_SECONDS, whichever comes first: few,
# large transactions while listing fast, and fresh shards for the feeder while listing slowly.
WRITE_KEYS = 10_000
WRITE_SECONDS = 2.0


class ListingBusy(PisarError):
    """Another process is listing this campaign right now."""


@dataclass
class Listed:
    """A campaign's listing once every range is done."""

    keys: int
    shards: int
    skipped: Counter[str]
    seconds: float  # this run's listing time (a resumed listing counts only its own part)
    scans: int = 0  # a detect campaign's scans (its lines are counted as they are detected)
    unanswered: str = ""  # the source's parts that did not answer and wait for `pisar resume` (IIIF manifests), in words

    def describe_skipped(self) -> str:
        return describe_skipped(self.skipped)

    def still_owed(self) -> str:
        """``"; <unanswered>"`` to end the listing's line with, or nothing."""
        return f"; {self.unanswered}" if self.unanswered else ""


def plan_ranges(conn: Connection, campaign_id: int, ranges: list[KeyRange], skipped: dict[str, int] | None = None) -> None:
    """Record the key ranges of a new campaign, in the caller's transaction; ``skipped`` counts
    keys left out before listing (a manifest's), kept with the first range."""
    conn.execute(
        insert(_PART),
        [
            {
                "campaign_id": campaign_id,
                "ordinal": i,
                "prefix": r.prefix,
                "recursive": r.recursive,
                "folders": list(r.folders),
                "carry": [],
                "skipped": dict(skipped or {}) if i == 0 else {},
            }
            for i, r in enumerate(ranges)
        ],
    )


def list_into_catalog(
    url: str,
    campaign_id: int,
    storage: KeySource,
    threads: int,
    every: float = 2.0,
    tick: Callable[[], None] | None = None,
    *,
    wait_turn: bool = False,
) -> Listed:
    """List every range not done yet into the catalog, then close the campaign's listing.

    ``tick`` runs every ``every`` seconds on the calling thread while the listers work (the
    submit publishes the shards listed so far with it). Another process listing the campaign
    makes this raise ``ListingBusy``, or with ``wait_turn`` wait for it and then list what it left.
    """
    started = time.monotonic()
    with _listing_lock(url, campaign_id, wait_turn):
        with get_engine(url).connect() as conn:
            shard_size, layout = conn.execute(select(_CAMPAIGN.c.shard_size, _CAMPAIGN.c.layout).where(_CAMPAIGN.c.id == campaign_id)).one()
            parts = conn.execute(select(_PART).where(_PART.c.campaign_id == campaign_id, ~_PART.c.done).order_by(_PART.c.ordinal)).all()
            last = conn.execute(select(func.max(_SHARD.c.index)).where(_SHARD.c.campaign_id == campaign_id)).scalar_one()
        indexes = _Indexes(0 if last is None else last + 1)
        stop = threading.Event()  # one range failed: the others stop at their next page
        if parts:
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(parts))), thread_name_prefix="lister") as pool:
                futures = [
                    pool.submit(_list_range, url, campaign_id, shard_size, storage, part, indexes, stop, line_source(layout))
                    for part in parts
                ]
                while True:
                    finished, running = wait(futures, timeout=every, return_when=FIRST_EXCEPTION)
                    failed = [f for f in finished if f.exception() is not None]
                    if failed:
                        stop.set()
                        raise failed[0].exception()  # type: ignore[misc]
                    if tick is not None:
                        tick()
                    if not running:
                        break
        return _close(url, campaign_id, time.monotonic() - started)


def _list_range(
    url: str,
    campaign_id: int,
    shard_size: int,
    storage: KeySource,
    part,
    indexes: _Indexes,
    stop: threading.Event,  # a listing_part row
    source: LineSource,
) -> None:
    carry: list[str] = list(part.carry)
    skipped: Counter[str] = Counter(part.skipped)
    keys = part.keys
    after = part.after
    ready: list[list[str]] = []  # full shards listed since the last write
    written_at = time.monotonic()
    for page in storage.list_range(KeyRange(part.prefix, part.recursive, tuple(part.folders)), after):
        if stop.is_set():
            return
        made, carry = source.add_listed(storage, page, carry, shard_size, skipped)  # line images, or a page file's TextLines
        ready.extend(made)
        keys += sum(len(shard) for shard in made)
        after = page[-1]
        if len(ready) * shard_size >= WRITE_KEYS or time.monotonic() - written_at >= WRITE_SECONDS:
            _write(url, campaign_id, part.id, ready, indexes, source, after=after, carry=carry, keys=keys, skipped=skipped, done=False)
            ready, written_at = [], time.monotonic()
    if carry:
        ready.append(carry)
    _write(url, campaign_id, part.id, ready, indexes, source, after=after, carry=[], keys=keys + len(carry), skipped=skipped, done=True)


def _write(
    url: str, campaign_id: int, part_id: int, listed: list[list[str]], indexes: _Indexes, source: LineSource, **progress: object
) -> None:
    """Full shards listed since the last write, with their lines (or scans to detect), and the range's progress: one transaction."""
    progress["skipped"] = dict(progress["skipped"])  # type: ignore[call-overload]
    with get_engine(url).begin() as conn:
        if listed:
            source.write_listed(conn, campaign_id, indexes.take(len(listed)), listed)
        conn.execute(update(_PART).where(_PART.c.id == part_id).values(**progress))


def reopen(url: str, campaign_id: int) -> None:
    """A finished listing opened again, each range to go on from the last key it listed: for a
    source that has more to give than it gave then (IIIF manifests whose server did not answer)."""
    with get_engine(url).begin() as conn:
        conn.execute(update(_PART).where(_PART.c.campaign_id == campaign_id).values(done=False))
        conn.execute(update(_CAMPAIGN).where(_CAMPAIGN.c.id == campaign_id).values(listed_at=None, updated_at=utcnow()))


def _close(url: str, campaign_id: int, seconds: float) -> Listed:
    """Every range is listed: the campaign's totals, and the time its listing ended."""
    with get_engine(url).begin() as conn:
        keys, shard_total = conn.execute(
            select(func.coalesce(func.sum(_SHARD.c.line_count), 0), func.count()).where(_SHARD.c.campaign_id == campaign_id)
        ).one()
        scans = conn.execute(select(func.count()).where(_PAGE.c.campaign_id == campaign_id)).scalar_one()
        skipped: Counter[str] = Counter()
        for part_skipped in conn.execute(select(_PART.c.skipped).where(_PART.c.campaign_id == campaign_id)).scalars():
            skipped.update(part_skipped)
        conn.execute(
            update(_CAMPAIGN)
            .where(_CAMPAIGN.c.id == campaign_id)
            .values(
                line_count=int(keys), shard_count=int(shard_total), skipped_files=dict(skipped), listed_at=utcnow(), updated_at=utcnow()
            )
        )
    return Listed(keys=int(keys), shards=int(shard_total), skipped=skipped, seconds=seconds, scans=int(scans))


class _Indexes:
    """Shard indexes handed out to lister threads, in the order their shards are written."""

    def __init__(self, first: int) -> None:
        self._next = first
        self._lock = threading.Lock()

    def take(self, count: int) -> int:
        with self._lock:
            first = self._next
            self._next += count
            return first


_BUSY = "another process is listing this campaign now"


@contextmanager
def _listing_lock(url: str, campaign_id: int, wait_turn: bool) -> Iterator[None]:
    """Hold this campaign's listing lock (``pisar/catalog/locks.py``): Postgres's advisory lock, a file lock on SQLite."""
    try:
        with locks.held(url, locks.LISTING, campaign_id, wait=wait_turn, on_wait=lambda: log.warning(_BUSY + "; waiting for it")):
            yield
    except locks.Busy:
        raise ListingBusy(_BUSY + "; wait for it, or stop it and run `pisar resume`") from None
