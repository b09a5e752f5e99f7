"""`pisar retry NAME --scan KEY` (and ``--scans-without-lines``, ``--failed-scans``): detect scans again.

A detect campaign's scan whose lines were missed (nothing found, a merged margin note) or whose
detection failed is detected again, with the worker's detector or one named (``--detector``), and
its lines are read again: the scan goes back to ``pending`` with a fresh budget of attempts, its
read shard back to ``detecting``, and when the new detection commits, every line the earlier one
gave is re-read under the retry (a line the new layout still holds gets a new reading, one it lacks
``LineNotInLayout``), so each line's earlier result moves to ``line_history`` as any retry keeps it,
and the lines that are new are added. A scan whose shard a worker is reading now is left alone,
and said so. Each retry is a row in ``retry``, with what it selected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, func, insert, or_, select

from pisar.catalog import pages, shards
from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, Page, Retry, Shard, ShardState, utcnow
from pisar.catalog.shards import held_by_a_worker
from pisar.errors import ConfigError
from pisar.layout import split_line_key
from pisar.producer.retry import requested_by
from pisar.safe_text import printable

_PAGE = Page.__table__
_SHARD = Shard.__table__
_LINE = Line.__table__
_RETRY = Retry.__table__
EXAMPLES = 5


@dataclass(frozen=True)
class ScanSelector:
    """Which scans to detect again; stored with the retry."""

    keys: tuple[str, ...] = ()
    without_lines: bool = False
    failed: bool = False  # quarantined: the scan could not be detected
    detector: str | None = None  # another detector than the workers'

    @property
    def picks(self) -> bool:
        return bool(self.keys) or self.without_lines or self.failed


@dataclass
class RedetectPlan:
    scans: int
    shard_ids: list[int]
    examples: list[str]
    running: int  # chosen scans whose shard a worker reads now: left alone
    lines: int  # the lines their earlier detection gave, read again
    reasons: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _reasons(campaign_id: int, selector: ScanSelector) -> dict[str, Any]:
    settled = _PAGE.c.state.in_([ShardState.DONE.value, ShardState.QUARANTINED.value, ShardState.FAILED.value])
    mine = and_(_PAGE.c.campaign_id == campaign_id, settled)
    reasons: dict[str, Any] = {}
    if selector.keys:
        reasons["scans named"] = and_(mine, _PAGE.c.key.in_(selector.keys))
    if selector.without_lines:
        reasons["scans without lines"] = and_(mine, _PAGE.c.flags == pages.NO_LINES)
    if selector.failed:
        reasons["scans quarantined"] = and_(mine, _PAGE.c.state == ShardState.QUARANTINED.value)
    return reasons


def plan(url: str, campaign_id: int, selector: ScanSelector) -> RedetectPlan:
    """What a re-detection would cover, changing nothing (``--dry-run``)."""
    if not selector.picks:
        raise ConfigError("choose scans to detect again: --scan KEY, --scans-without-lines or --failed-scans")
    reasons = _reasons(campaign_id, selector)
    picked = or_(*reasons.values())
    live = select(_SHARD.c.id).where(_SHARD.c.campaign_id == campaign_id, held_by_a_worker(utcnow()))
    with get_engine(url).connect() as conn:
        if selector.keys:
            known = set(
                conn.execute(select(_PAGE.c.key).where(_PAGE.c.campaign_id == campaign_id, _PAGE.c.key.in_(selector.keys))).scalars()
            )
            unknown = sorted(set(selector.keys) - known)
            if unknown:
                raise ConfigError(f"no scan {', '.join(printable(k) for k in unknown[:5])} in this campaign (see `pisar status`)")
        rows = conn.execute(select(_PAGE.c.id, _PAGE.c.key, _PAGE.c.shard_id).where(picked).order_by(_PAGE.c.key)).all()
        held = set(conn.execute(live).scalars())
        counts = {name: conn.execute(select(func.count()).where(condition)).scalar_one() for name, condition in reasons.items()}
        chosen = [row for row in rows if row.shard_id not in held]
        keys = [row.key for row in chosen]
        wanted = set(keys)  # one query over the chosen scans' shards; a line is its scan's by its key's first part
        shard_ids = sorted({row.shard_id for row in chosen})
        line_keys = conn.execute(select(_LINE.c.key).where(_LINE.c.shard_id.in_(shard_ids))).scalars() if shard_ids else []
        lines = sum(1 for key in line_keys if split_line_key(key)[0] in wanted)
    return RedetectPlan(len(chosen), shard_ids, keys[:EXAMPLES], len(rows) - len(chosen), lines, counts)


def apply(url: str, campaign_id: int, selector: ScanSelector) -> tuple[int | None, RedetectPlan]:
    """Record the retry, send its scans back to detection and their shards back to ``detecting``."""
    if selector.detector:
        from pisar.detect import check_available

        check_available(selector.detector)  # a detector this machine cannot load is refused before anything changes
    covered = plan(url, campaign_id, selector)
    if not covered.scans:
        return None, covered
    with get_engine(url).begin() as conn:
        retry_id = conn.execute(
            insert(_RETRY)
            .values(
                campaign_id=campaign_id,
                created_at=utcnow(),
                requested_by=requested_by(),
                selector={"redetect": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(selector).items()}},
                shard_count=len(covered.shard_ids),
                line_count=covered.lines,
            )
            .returning(_RETRY.c.id)
        ).scalar_one()
        live = select(_SHARD.c.id).where(_SHARD.c.campaign_id == campaign_id, held_by_a_worker(utcnow()))
        ids = list(
            conn.execute(select(_PAGE.c.id).where(or_(*_reasons(campaign_id, selector).values()), _PAGE.c.shard_id.not_in(live))).scalars()
        )
        shard_ids = pages.redetect(conn, campaign_id, ids, selector.detector, retry_id)
        shards.wait_for_detection(conn, shard_ids)
    return retry_id, covered
