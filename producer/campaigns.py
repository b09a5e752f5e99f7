"""Campaign lookups: by name, line counts from the shards' counters, the shards a resume takes up again."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, Select, and_, func, or_, select
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


def shards_unfinished(url: str, campaign_id: int) -> list[int]:
    """Every shard not done or quarantined, those a live process holds included (``pisar run`` waits for them)."""
    final = [ShardState.DONE.value, ShardState.QUARANTINED.value]
    return _shard_ids(url, and_(_SHARD.c.campaign_id == campaign_id, _SHARD.c.state.not_in(final)))


def _shard_ids(url: str, condition: ColumnElement[bool]) -> list[int]:
    with get_engine(url).connect() as conn:
        return list(conn.execute(select(_SHARD.c.id).where(condition).order_by(_SHARD.c.index)).scalars())
