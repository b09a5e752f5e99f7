"""A detect campaign's scans: their lifecycle, one table of allowed moves, one function per move.

This module is the only writer of ``page`` rows. A scan is detected once, as its own unit of work,
fenced like a shard: ``claim`` sets a lease and a new token, ``finish`` writes its layout and its
lines only under that token, so a scan detected twice is written once. Its lines join the read
shard the listing made for it and its neighbours (``shard_id``); the commit that settles the last
of that shard's scans moves the shard from ``detecting`` to ``pending``, and reading begins.

A scan that cannot be decoded (a ``LineError``: unreadable, over the pixel limit) is quarantined
at once, as the same bytes would fail again; any other failure (the detector crashing, out of
memory) is retried until the last attempt. A quarantined scan leaves one error line ``<scan>#``
in its shard with the error's class and message, so `status`, exports and `retry` see it like any
line's error, and its neighbours are read as usual. A scan where nothing is found is ``done`` with
no lines and the flag ``no_lines``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from pisar.catalog import shards
from pisar.catalog.bulk import insert_pending_lines
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line, LineHistory, LineStatus, Page, ShardState, utcnow
from pisar.catalog.publishing import pick_pending
from pisar.catalog.shard_moves import Transition
from pisar.errors import WorkerCrash
from pisar.layout import line_key, split_line_key

_PAGE = Page.__table__
_LINE = Line.__table__
_CAMPAIGN = Campaign.__table__
_HISTORY = LineHistory.__table__
PENDING, QUEUED, RUNNING = ShardState.PENDING, ShardState.QUEUED, ShardState.RUNNING
DONE, FAILED, QUARANTINED = ShardState.DONE, ShardState.FAILED, ShardState.QUARANTINED
SETTLED = (DONE.value, QUARANTINED.value)
NO_LINES = "no_lines"

#: The table of allowed moves of a scan's state; the functions below build their SQL from it.
MOVES: dict[str, Transition] = {
    "list": Transition(frozenset(), PENDING, "the listing of a detect campaign"),
    "publish": Transition(frozenset({PENDING}), QUEUED, "the feeder, just before it sends the scan's message"),
    "unpublish": Transition(frozenset({QUEUED}), PENDING, "the feeder, when the message could not be sent"),
    "claim": Transition(frozenset({PENDING, QUEUED, FAILED}), RUNNING, "a detect worker: new token and lease, one more attempt"),
    "finish": Transition(frozenset({RUNNING}), DONE, "the detect worker, in the transaction that writes the scan's layout and lines"),
    "fail": Transition(frozenset({RUNNING}), FAILED, "the detect worker: the detector failed, attempts left"),
    "quarantine": Transition(
        frozenset({RUNNING}), QUARANTINED, "the detect worker: the scan cannot be decoded, or the last attempt failed"
    ),
    "release": Transition(frozenset({RUNNING}), QUEUED, "the detect worker: an outage or a stopping worker; attempt refunded"),
    "expire": Transition(frozenset({RUNNING}), PENDING, "the reaper or a claim: the lease ran out, its worker is gone"),
    "redetect": Transition(frozenset({DONE, QUARANTINED, FAILED}), PENDING, "`pisar retry --scan`: detect it again"),
    "give_up": Transition(frozenset({PENDING, QUEUED, FAILED}), QUARANTINED, "a claim: every attempt is spent (its workers died on it)"),
}


@dataclass(frozen=True)
class PageClaim:
    page_id: int
    campaign_id: int
    shard_id: int
    key: str
    token: int
    attempts: int
    detector: str | None = None  # `retry --detector`: this scan's detector instead of the worker's
    retry_id: int | None = None  # detected again by this retry: its lines are re-read under it


@dataclass(frozen=True)
class PageFacts:
    """What the detector found, as stored: the PAGE XML and the ids of its lines in reading order."""

    layout: str
    line_ids: Sequence[str]
    width: int
    height: int
    detector: str
    seconds: float
    more_pages: Sequence[str] = ()  # a multi-page file's further pages, found by decoding its first: scans of the same shard


def _move(move: str, *where: object):
    transition = MOVES[move]
    return update(_PAGE).where(_PAGE.c.state.in_(sorted(s.value for s in transition.sources)), *where).values(state=transition.target.value)


def _fenced(held: PageClaim):
    return and_(_PAGE.c.id == held.page_id, _PAGE.c.token == held.token, _PAGE.c.state == RUNNING.value)


def insert_listed(conn: Connection, campaign_id: int, rows: Iterable[tuple[int, str]]) -> int:
    """``(shard_id, scan key)`` rows as pending scans (caller's transaction); returns the count."""
    values = [{"campaign_id": campaign_id, "shard_id": s, "key": k, "state": MOVES["list"].target.value} for s, k in rows]
    if values:
        conn.execute(insert(_PAGE), values)
    return len(values)


@dataclass(frozen=True)
class PublishedPage:
    page_id: int
    campaign_id: int
    campaign_name: str
    key: str


def publish_next(url: str, queue: str, priority: int, limit: int) -> list[PublishedPage]:
    """Mark the next ``limit`` pending scans of ``queue``'s campaigns at ``priority`` queued (oldest
    campaign, then key order); two feeders never pick the same scan (``FOR UPDATE SKIP LOCKED``)."""
    if limit <= 0:
        return []
    with get_engine(url).begin() as conn:
        ids = pick_pending(conn, _PAGE, _PAGE.c.key, queue, priority, limit)
        if not ids:
            return []
        conn.execute(_move("publish", _PAGE.c.id.in_(ids)).values(queued_at=utcnow()))
        rows = conn.execute(
            select(_PAGE.c.id, _PAGE.c.campaign_id, _CAMPAIGN.c.name, _PAGE.c.key)
            .join(_CAMPAIGN, _CAMPAIGN.c.id == _PAGE.c.campaign_id)
            .where(_PAGE.c.id.in_(ids), _PAGE.c.state == QUEUED.value)
            .order_by(_PAGE.c.campaign_id, _PAGE.c.key)
        ).all()
    return [PublishedPage(*row) for row in rows]


def unpublish(url: str, page_ids: Sequence[int]) -> int:
    """Scans whose message could not be sent: back to ``pending``."""
    if not page_ids:
        return 0
    with get_engine(url).begin() as conn:
        return conn.execute(_move("unpublish", _PAGE.c.id.in_(list(page_ids))).values(queued_at=None)).rowcount


def reopen(url: str, campaign_id: int) -> int:
    """`pisar resume`: the campaign's queued scans (their messages may be gone with Redis) and those whose
    lease ran out back to ``pending``, for the feeder to send again; a second message is skipped by its claim."""
    with get_engine(url).begin() as conn:
        now = utcnow()
        expired = conn.execute(
            _move("expire", _PAGE.c.campaign_id == campaign_id, _PAGE.c.lease_until < now).values(lease_until=None)
        ).rowcount
        return expired + conn.execute(_move("unpublish", _PAGE.c.campaign_id == campaign_id).values(queued_at=None)).rowcount


def expire_leases(url: str) -> int:
    """Running scans whose lease ran out (their worker died) back to ``pending``, for the feeder to send again.

    No attempt is refunded: a scan that kills its worker every time ends quarantined at the next
    claim past the limit (``claim`` refuses it, ``quarantine_exhausted`` records it)."""
    with get_engine(url).begin() as conn:
        return conn.execute(_move("expire", _PAGE.c.lease_until < utcnow()).values(lease_until=None)).rowcount


def claim(url: str, page_id: int, worker: str, lease_seconds: int, max_attempts: int) -> PageClaim | None:
    """Take the scan unless a live lease holds it or it is settled; ``None`` when there is nothing to take."""
    now = utcnow()
    with get_engine(url).begin() as conn:
        conn.execute(_move("expire", _PAGE.c.id == page_id, _PAGE.c.lease_until < now).values(lease_until=None))
        row = conn.execute(
            _move("claim", _PAGE.c.id == page_id, _PAGE.c.attempts < max_attempts)
            .values(
                token=_PAGE.c.token + 1,
                attempts=_PAGE.c.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                worker=worker,
                started_at=now,
                finished_at=None,
            )
            .returning(
                _PAGE.c.campaign_id, _PAGE.c.shard_id, _PAGE.c.key, _PAGE.c.token, _PAGE.c.attempts, _PAGE.c.detector_name, _PAGE.c.retry_id
            )
        ).first()
        if row is None:
            _give_up(conn, page_id, max_attempts)
            return None
    return PageClaim(page_id, row.campaign_id, row.shard_id, row.key, row.token, row.attempts, row.detector_name, row.retry_id)


def _give_up(conn: Connection, page_id: int, max_attempts: int) -> None:
    """A scan waiting with no attempt left (its workers died on it, lease after lease) is quarantined, not left waiting."""
    found = conn.execute(
        select(_PAGE.c.campaign_id, _PAGE.c.shard_id, _PAGE.c.key).where(
            _PAGE.c.id == page_id, _PAGE.c.attempts >= max_attempts, _PAGE.c.state.in_(sorted(s.value for s in MOVES["give_up"].sources))
        )
    ).first()
    if found is None:
        return
    shards.lock_detecting(conn, found.shard_id)
    error = WorkerCrash(f"the detect worker died on this scan {max_attempts} times")
    if conn.execute(_move("give_up", _PAGE.c.id == page_id).values(error=str(error), error_class=type(error).__name__)).rowcount:
        _error_line(conn, found.campaign_id, found.shard_id, found.key, error)


def renew(url: str, held: PageClaim, lease_seconds: int) -> bool:
    with get_engine(url).begin() as conn:
        until = utcnow() + timedelta(seconds=lease_seconds)
        return conn.execute(update(_PAGE).where(_fenced(held)).values(lease_until=until)).rowcount == 1


def finish(url: str, held: PageClaim, facts: PageFacts) -> bool:
    """Write the scan's layout and its lines and mark it done, in one transaction; False if a newer claim holds it."""
    with get_engine(url).begin() as conn:
        shards.lock_detecting(conn, held.shard_id)
        done = conn.execute(
            _move("finish", _fenced(held)).values(
                layout=facts.layout,
                line_count=len(facts.line_ids),
                flags=None if facts.line_ids else NO_LINES,
                width=facts.width,
                height=facts.height,
                detector=facts.detector,
                detect_seconds=facts.seconds,
                lease_until=None,
                error=None,
                error_class=None,
                finished_at=utcnow(),
            )
        ).rowcount
        if not done:
            conn.rollback()
            return False
        keys = [line_key(held.key, line_id) for line_id in facts.line_ids]
        new_keys = _supersede(conn, held, keys) if held.retry_id is not None else keys
        insert_pending_lines(conn, held.campaign_id, ((held.shard_id, key) for key in new_keys))
        if facts.more_pages:  # before the shard is settled: it now waits for these too
            known = set(
                conn.execute(
                    select(_PAGE.c.key).where(_PAGE.c.campaign_id == held.campaign_id, _PAGE.c.key.in_(facts.more_pages))
                ).scalars()
            )
            insert_listed(conn, held.campaign_id, ((held.shard_id, key) for key in facts.more_pages if key not in known))
        shards.add_detected(conn, held.shard_id, len(new_keys), _last_scan(conn, held.shard_id))
    return True


def _supersede(conn: Connection, held: PageClaim, keys: Sequence[str]) -> list[str]:
    """A scan detected again: every line its earlier detection gave is read again under the retry
    (one the new layout still has gets a new reading, one it lacks ``LineNotInLayout``; either way
    the earlier result goes to ``line_history``), its error line ``<scan>#`` goes where nothing refers
    to it; returns the keys that are new."""
    prefix = f"{held.key}#"
    found = conn.execute(
        select(_LINE.c.id, _LINE.c.key).where(_LINE.c.shard_id == held.shard_id, _LINE.c.key >= prefix, _LINE.c.key < f"{held.key}$")
    ).all()
    mine = {row.key: row.id for row in found if split_line_key(row.key)[0] == held.key}  # not a TIFF's later pages
    error_line = mine.pop(line_key(held.key, ""), None)
    if error_line is not None:
        referred = select(_HISTORY.c.id).where(_HISTORY.c.line_id == error_line).exists()
        conn.execute(delete(_LINE).where(_LINE.c.id == error_line, ~referred))
        conn.execute(update(_LINE).where(_LINE.c.id == error_line).values(retry_id=held.retry_id))  # kept if history refers to it
    if mine:
        conn.execute(update(_LINE).where(_LINE.c.id.in_(list(mine.values()))).values(retry_id=held.retry_id))
    return [key for key in keys if key not in mine]


def redetect(conn: Connection, campaign_id: int, page_ids: Sequence[int], detector: str | None, retry_id: int) -> list[int]:
    """Scans to detect again (caller's transaction): back to ``pending`` with a fresh budget of
    attempts, ``detector`` (or the worker's) and the retry; returns their shards' ids."""
    chosen = and_(_PAGE.c.campaign_id == campaign_id, _PAGE.c.id.in_(list(page_ids)))
    moved = conn.execute(
        _move("redetect", chosen)
        .values(attempts=0, detector_name=detector, retry_id=retry_id, error=None, error_class=None, flags=None, finished_at=None)
        .returning(_PAGE.c.shard_id)
    ).scalars()
    return sorted(set(moved))


def fail(url: str, held: PageClaim, error: BaseException, max_attempts: int, *, final: bool) -> ShardState | None:
    """The scan's detection failed: ``failed`` (retried), or ``quarantined`` (``final``, or the last
    attempt) with one error line ``<scan>#`` in its shard; ``None`` if a newer claim holds it."""
    move = "quarantine" if final or held.attempts >= max_attempts else "fail"
    message = f"{type(error).__name__}: {error}"[:4000]
    with get_engine(url).begin() as conn:
        shards.lock_detecting(conn, held.shard_id)
        changed = conn.execute(
            _move(move, _fenced(held)).values(error=message, error_class=type(error).__name__, lease_until=None, finished_at=utcnow())
        ).rowcount
        if not changed:
            conn.rollback()
            return None
        if move == "quarantine":
            _error_line(conn, held.campaign_id, held.shard_id, held.key, error)
    return MOVES[move].target


def _error_line(conn: Connection, campaign_id: int, shard_id: int, scan_key: str, error: BaseException) -> None:
    """A quarantined scan's one line ``<scan>#``, an error from the start, joined to its shard (settling it if last);
    a scan quarantined again (detected again by a retry, and failing) has its line's error replaced."""
    key = line_key(scan_key, "")
    values = {"status": LineStatus.ERROR.value, "error_class": type(error).__name__, "error": str(error)[:4000], "finished_at": utcnow()}
    there = conn.execute(update(_LINE).where(_LINE.c.campaign_id == campaign_id, _LINE.c.key == key).values(**values)).rowcount
    if not there:
        conn.execute(insert(_LINE).values(campaign_id=campaign_id, shard_id=shard_id, key=key, image=scan_key, **values))
    shards.add_detected(conn, shard_id, 0 if there else 1, _last_scan(conn, shard_id))


def release(url: str, held: PageClaim) -> bool:
    """Give the scan back (``queued``, attempt refunded); False if a newer claim holds it."""
    with get_engine(url).begin() as conn:
        changed = conn.execute(
            _move("release", _fenced(held)).values(lease_until=None, attempts=_PAGE.c.attempts - 1, worker=None, queued_at=utcnow())
        ).rowcount
    return changed == 1


def _last_scan(conn: Connection, shard_id: int) -> bool:
    """Whether every scan of the shard is settled, the caller's own move included."""
    unsettled = conn.execute(select(func.count()).where(_PAGE.c.shard_id == shard_id, _PAGE.c.state.not_in(SETTLED))).scalar_one()
    return unsettled == 0


def to_detect(url: str, campaign_id: int) -> list[int]:
    """The campaign's scans not settled yet, in key order."""
    with get_engine(url).connect() as conn:
        query = select(_PAGE.c.id).where(_PAGE.c.campaign_id == campaign_id, _PAGE.c.state.not_in(SETTLED)).order_by(_PAGE.c.key)
        return list(conn.execute(query).scalars())


def held_until(url: str, page_id: int) -> datetime | None:
    """When the live lease on a running scan ends; ``None`` when no live worker holds it."""
    with get_engine(url).connect() as conn:
        row = conn.execute(select(_PAGE.c.state, _PAGE.c.lease_until).where(_PAGE.c.id == page_id)).first()
    if row is None or row.state != RUNNING.value or row.lease_until is None:
        return None
    until = row.lease_until if row.lease_until.tzinfo else row.lease_until.replace(tzinfo=UTC)
    return until if until > utcnow() else None


def stored_layouts(url: str, campaign_id: int, keys: Iterable[str]) -> dict[str, bytes]:
    """The detected layouts (PAGE XML) of the scans ``keys``, where they have one."""
    wanted = sorted(set(keys))
    found: dict[str, bytes] = {}
    with get_engine(url).connect() as conn:
        for start in range(0, len(wanted), 500):
            query = select(_PAGE.c.key, _PAGE.c.layout).where(
                _PAGE.c.campaign_id == campaign_id, _PAGE.c.key.in_(wanted[start : start + 500]), _PAGE.c.layout.is_not(None)
            )
            found.update((row.key, row.layout.encode()) for row in conn.execute(query))
    return found


def counts(url: str, campaign_id: int) -> dict[str, int]:
    """Scans by state (every state, zeros included) and those detected with no line (``no_lines``); empty without scans."""
    with get_engine(url).connect() as conn:
        query = select(_PAGE.c.state, func.count()).where(_PAGE.c.campaign_id == campaign_id).group_by(_PAGE.c.state)
        by_state = {str(state): int(n) for state, n in conn.execute(query).all()}
        empty = conn.execute(select(func.count()).where(_PAGE.c.campaign_id == campaign_id, _PAGE.c.flags == NO_LINES)).scalar_one()
    if not by_state:
        return {}
    states = [state.value for state in ShardState if state is not ShardState.DETECTING]
    return {**{state: by_state.get(state, 0) for state in states}, NO_LINES: int(empty)}


def problem_scans(url: str, campaign_id: int, limit: int = 20) -> list[dict[str, object]]:
    """Scans that failed or were quarantined, and scans where nothing was found: what `status` lists."""
    problem = or_(_PAGE.c.state.in_([FAILED.value, QUARANTINED.value]), _PAGE.c.flags == NO_LINES)
    query = (
        select(_PAGE.c.key, _PAGE.c.state, _PAGE.c.attempts, _PAGE.c.flags, _PAGE.c.error_class, _PAGE.c.error)
        .where(_PAGE.c.campaign_id == campaign_id, problem)
        .order_by(_PAGE.c.key)
        .limit(limit)
    )
    with get_engine(url).connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
