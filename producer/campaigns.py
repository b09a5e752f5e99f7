"""Campaign lookups and the shard transitions operators ask for: resume and retry."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Select, and_, func, or_, select, update
from sqlmodel import Session

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line, LineStatus, Shard, ShardState, utcnow
from pisar.errors import NotFound

_SHARD = Shard.__table__
_LINE = Line.__table__
_CAMPAIGN = Campaign.__table__


def find_campaign(url: str, name: str) -> Campaign | None:
    """The campaign called ``name``, detached from its session, or ``None``."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        return session.scalars(select(Campaign).where(Campaign.name == name)).first()


def get_campaign(url: str, name: str) -> Campaign:
    """The campaign called ``name``; ``NotFound`` with one line otherwise."""
    campaign = find_campaign(url, name)
    if campaign is None:
        raise NotFound(f"no campaign named {name!r} in the catalog")
    return campaign


def line_counts_statement(campaign_id: int | None = None) -> Select:
    """Lines listed, ok and in error per campaign (all, or one), summed from the shards (also EXPLAINed by bench/catalog.py)."""
    query = (
        select(
            _CAMPAIGN.c.id,
            func.coalesce(func.sum(_SHARD.c.line_count), 0),
            func.coalesce(func.sum(_SHARD.c.ok_lines), 0),
            func.coalesce(func.sum(_SHARD.c.error_lines), 0),
        )
        .select_from(_CAMPAIGN.outerjoin(_SHARD, _SHARD.c.campaign_id == _CAMPAIGN.c.id))
        .group_by(_CAMPAIGN.c.id)
    )
    return query if campaign_id is None else query.where(_CAMPAIGN.c.id == campaign_id)


def line_counts(conn: Connection, campaign_id: int | None = None) -> dict[int, dict[str, int]]:
    """Lines by status per campaign (all, or one), from the per-shard counters: never a line scan.

    ``pending`` is the lines of its shards (those listed so far, while a listing goes on) less
    the lines with a result.
    """
    counts = {}
    for cid, total, ok, error in conn.execute(line_counts_statement(campaign_id)):
        total, ok, error = int(total), int(ok), int(error)
        counts[cid] = {LineStatus.PENDING.value: max(0, total - ok - error), LineStatus.OK.value: ok, LineStatus.ERROR.value: error}
    return counts


def shards_to_resume(url: str, campaign_id: int) -> list[int]:
    """Every shard not done and not held by a live lease: pending, queued, failed, expired running."""
    now = utcnow()
    condition = or_(
        _SHARD.c.state.in_([ShardState.PENDING.value, ShardState.QUEUED.value, ShardState.FAILED.value]),
        and_(_SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until < now),
    )
    return _shard_ids(url, and_(_SHARD.c.campaign_id == campaign_id, condition))


def _shard_ids(url: str, condition) -> list[int]:  # noqa: ANN001 - a SQLAlchemy clause
    with get_engine(url).connect() as conn:
        return list(conn.execute(select(_SHARD.c.id).where(condition).order_by(_SHARD.c.index)).scalars())


def held_by_a_worker(now: datetime):  # noqa: ANN201 - a SQLAlchemy where-clause on shard
    """Shards running under a lease that has not expired at ``now``: a live worker is on them."""
    return and_(_SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until >= now)


def mark_queued(url: str, campaign_id: int, shard_ids: Iterable[int], reset_attempts: bool) -> int:
    """Set shards to ``queued`` before their messages are sent (so a fast worker's claim is never overwritten)."""
    return move_shards(url, campaign_id, shard_ids, {"state": ShardState.QUEUED.value, "queued_at": utcnow()}, reset_attempts)


def move_shards(url: str, campaign_id: int, shard_ids: Iterable[int], values: dict[str, object], reset_attempts: bool) -> int:
    """Set ``values`` on these shards of a campaign, except those a live worker holds; one transaction.
    Returns how many changed."""
    ids = list(shard_ids)
    now = utcnow()
    values = {**values, "attempts": 0} if reset_attempts else values
    live = held_by_a_worker(now)
    changed = 0
    with get_engine(url).begin() as conn:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            changed += conn.execute(
                update(_SHARD).where(_SHARD.c.campaign_id == campaign_id, _SHARD.c.id.in_(chunk), ~live).values(**values)
            ).rowcount
        conn.execute(update(Campaign.__table__).where(Campaign.__table__.c.id == campaign_id).values(updated_at=now))
    return changed
