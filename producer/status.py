"""Durable progress of a campaign, computed from the catalog alone (never from Redis)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select

from pisar.catalog import canvases, pages
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line, LineStatus, Retry, Shard, ShardState, utcnow
from pisar.catalog.pages import NO_LINES
from pisar.catalog.shards import held_by_a_worker
from pisar.producer.campaigns import line_counts

_SHARD = Shard.__table__
_LINE = Line.__table__
_RETRY = Retry.__table__

RECENT_MINUTES = 5


@dataclass
class CampaignStatus:
    """What ``pisar status`` shows; ``as_json`` keys are a stable contract for scripts."""

    name: str
    source_url: str
    model: str
    model_revision: str
    created_at: str
    lines_total: int  # listed so far, while ``listing_done`` is false
    lines: dict[str, int]
    shards: dict[str, int]
    empty_lines: int = 0  # ok lines read as empty or blank (flag ``empty``): likely misses, `retry --flag empty`
    error_classes: list[dict[str, Any]] = field(default_factory=list)
    shard_errors: list[dict[str, Any]] = field(default_factory=list)
    listing_done: bool = True
    lines_per_second_recent: float | None = None
    lines_per_second_overall: float | None = None
    eta_seconds: float | None = None
    stale_leases: int = 0
    duplicate_deliveries: int = 0
    workers_recent: list[str] = field(default_factory=list)
    lines_awaiting_retry: int = 0
    retries: list[dict[str, Any]] = field(default_factory=list)
    # A detect campaign's scans by state, and ``no_lines`` (detected, nothing found); empty for other campaigns.
    scans: dict[str, int] = field(default_factory=dict)
    scan_problems: list[dict[str, Any]] = field(default_factory=list)  # failed, quarantined or without lines
    # A IIIF campaign's manifests: read, not read, and their canvases; and why each unread one was not.
    manifests: dict[str, int] = field(default_factory=dict)
    manifest_problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        scans_left = sum(
            n for state, n in self.scans.items() if state not in (ShardState.DONE.value, ShardState.QUARANTINED.value, NO_LINES)
        )
        return self.lines.get(LineStatus.PENDING.value, 0) == 0 and not scans_left

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def shard_states_statement(campaign_id: int) -> Select:
    """Shards per state (bench/catalog.py EXPLAINs these statements as `status` runs them)."""
    return select(_SHARD.c.state, func.count()).where(_SHARD.c.campaign_id == campaign_id).group_by(_SHARD.c.state)


def error_classes_statement(campaign_id: int) -> Select:
    """The ten commonest error classes, with a count and one example key each."""
    return (
        select(_LINE.c.error_class, func.count(), func.min(_LINE.c.key))
        .where(_LINE.c.campaign_id == campaign_id, _LINE.c.status == LineStatus.ERROR.value)
        .group_by(_LINE.c.error_class)
        .order_by(func.count().desc())
        .limit(10)
    )


def awaiting_retry_statement(campaign_id: int) -> Select:
    """Lines a retry asked for again and no worker has read yet (the partial index on ``retry_id``)."""
    return select(func.count()).where(_LINE.c.campaign_id == campaign_id, _LINE.c.retry_id.is_not(None))


def campaign_status(url: str, campaign: Campaign) -> CampaignStatus:
    """Counts by line status and shard state, top error classes, throughput and ETA."""
    now = utcnow()
    recent = now - timedelta(minutes=RECENT_MINUTES)
    cid = campaign.id
    with get_engine(url).connect() as conn:
        lines = line_counts(conn, cid)[cid]  # from the per-shard counters, not from line rows
        shards = dict(conn.execute(shard_states_statement(cid)).all())
        errors = conn.execute(error_classes_statement(cid)).all()
        shard_errors = conn.execute(
            select(_SHARD.c.index, _SHARD.c.state, _SHARD.c.attempts, _SHARD.c.error)
            .where(_SHARD.c.campaign_id == cid, _SHARD.c.state.in_([ShardState.FAILED.value, ShardState.QUARANTINED.value]))
            .order_by(_SHARD.c.index)
            .limit(20)
        ).all()
        first_start, last_finish = conn.execute(
            select(func.min(_SHARD.c.started_at), func.max(_SHARD.c.finished_at)).where(_SHARD.c.campaign_id == cid)
        ).one()
        # The recent window ends now while work remains, at the last commit once it is finished,
        # and never starts before the first shard did: a 1-second run is not averaged over 5 minutes.
        window_end = now if lines.get(LineStatus.PENDING.value, 0) or last_finish is None else last_finish
        window_start = max(window_end - timedelta(minutes=RECENT_MINUTES), first_start or window_end)
        recent_done = conn.execute(  # the lines each shard's last run wrote (a retry's few, not its whole shard)
            select(func.coalesce(func.sum(_SHARD.c.run_lines), 0)).where(
                _SHARD.c.campaign_id == cid,
                _SHARD.c.finished_at >= window_start,
                _SHARD.c.finished_at <= window_end,
            )
        ).scalar_one()
        stale = conn.execute(
            select(func.count()).where(_SHARD.c.campaign_id == cid, _SHARD.c.state == ShardState.RUNNING.value, _SHARD.c.lease_until < now)
        ).scalar_one()
        duplicates, empty = conn.execute(
            select(func.coalesce(func.sum(_SHARD.c.duplicate_deliveries), 0), func.coalesce(func.sum(_SHARD.c.empty_lines), 0)).where(
                _SHARD.c.campaign_id == cid
            )
        ).one()
        awaiting = conn.execute(awaiting_retry_statement(cid)).scalar_one()
        retries = conn.execute(
            select(_RETRY.c.id, _RETRY.c.created_at, _RETRY.c.requested_by, _RETRY.c.selector, _RETRY.c.model_id, _RETRY.c.line_count)
            .where(_RETRY.c.campaign_id == cid)
            .order_by(_RETRY.c.id.desc())
            .limit(5)
        ).all()
        seen = or_(_SHARD.c.finished_at >= recent, held_by_a_worker(now))  # a dead worker's expired lease does not count
        workers = conn.execute(select(_SHARD.c.worker).where(_SHARD.c.campaign_id == cid, seen).distinct().limit(100)).scalars().all()
    finished = sum(n for status, n in lines.items() if status != LineStatus.PENDING.value)
    pending = lines.get(LineStatus.PENDING.value, 0)
    window = (window_end - window_start).total_seconds()
    recent_rate = recent_done / window if recent_done and window > 0 else None
    overall_rate = None
    if first_start and last_finish and last_finish > first_start and finished:
        overall_rate = finished / (last_finish - first_start).total_seconds()
    rate = recent_rate or overall_rate
    return CampaignStatus(
        name=campaign.name,
        source_url=campaign.source_url,
        model=campaign.model_id,
        model_revision=campaign.model_revision,
        created_at=campaign.created_at.isoformat(),
        lines_total=sum(lines.values()),
        listing_done=campaign.listed_at is not None,
        lines={s.value: lines.get(s.value, 0) for s in LineStatus},
        shards={s.value: shards.get(s.value, 0) for s in ShardState},
        empty_lines=int(empty),
        error_classes=[{"error_class": c, "count": n, "example_key": k} for c, n, k in errors],
        shard_errors=[{"shard": i, "state": st, "attempts": a, "error": e} for i, st, a, e in shard_errors],
        lines_per_second_recent=recent_rate,
        lines_per_second_overall=overall_rate,
        eta_seconds=(pending / rate) if rate and pending else (0.0 if not pending else None),
        stale_leases=stale,
        duplicate_deliveries=int(duplicates),
        workers_recent=sorted(w for w in workers if w),
        lines_awaiting_retry=awaiting,
        retries=[
            {"retry": i, "at": at.isoformat(), "by": by, "selector": sel, "model": model, "lines": n}
            for i, at, by, sel, model, n in retries
        ],
        scans=pages.counts(url, cid),
        scan_problems=pages.problem_scans(url, cid),
        **_manifests(url, cid),
    )


def _manifests(url: str, campaign_id: int) -> dict[str, Any]:
    """A IIIF campaign's manifest counts and unread manifests (nothing for another campaign)."""
    read, failed, canvas_count = canvases.manifest_counts(url, campaign_id)
    if not read and not failed:
        return {}
    problems = [{"url": u, "error_class": c, "error": e} for u, c, e in canvases.unread_manifests(url, campaign_id)]
    return {"manifests": {"read": read, "not_read": failed, "canvases": canvas_count}, "manifest_problems": problems}
