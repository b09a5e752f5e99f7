"""`pisar retry`: choose lines precisely, say what will run, record who asked, keep every earlier result.

A selector picks lines; their shards are sent back to the workers, which read only those lines
(``pisar/catalog/shards.py``: ``lines_to_do``) and replace their results. Until then a line keeps its current result; the
commit of the new one moves the old one to ``line_history``. Each retry is a row in ``retry``.

Selectors (any together):
- ``failed``: lines not read yet in failed or quarantined shards;
- ``errors``: lines that errored with one of these classes;
- ``below_confidence``: ok lines under this confidence;
- ``flags``: ok lines with one of these flags (``pisar/flags.py``: max_length, repetition, empty, unstorable_text);
- ``shards``: with none of the above, every line of these shards; with them, only theirs in these shards.
With no selector at all: ``failed`` plus every errored line except ``WorkerCrash`` (those would
only crash a worker again; name the class with ``errors`` to retry them anyway).
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, and_, false, func, insert, or_, select, update

from pisar.catalog import shards
from pisar.catalog.codecs import has_any_flag
from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, LineStatus, Retry, Shard, ShardState, utcnow
from pisar.catalog.shards import held_by_a_worker
from pisar.errors import ConfigError, WorkerCrash, line_error_classes
from pisar.flags import KNOWN_FLAGS
from pisar.model_ref import ModelRef
from pisar.safe_text import printable

_LINE = Line.__table__
_SHARD = Shard.__table__
_RETRY = Retry.__table__
EXAMPLES = 5


@dataclass(frozen=True)
class RetrySelector:
    """Which lines a retry asks for again; stored as given with the retry."""

    failed: bool = False
    errors: tuple[str, ...] = ()
    below_confidence: float | None = None
    flags: tuple[str, ...] = ()
    shards: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.flags) - set(KNOWN_FLAGS))
        if unknown:
            raise ConfigError(f"unknown flag {', '.join(unknown)}: use {', '.join(KNOWN_FLAGS)}")
        classes = line_error_classes()
        unknown = sorted(set(self.errors) - set(classes))
        if unknown:
            raise ConfigError(f"unknown error class {', '.join(map(printable, unknown))}: use {', '.join(classes)}")
        if any(index < 0 for index in self.shards):
            raise ConfigError("--shard takes a shard's index in its campaign, 0 or more (see `pisar status NAME`)")
        if self.below_confidence is not None and not 0 < self.below_confidence <= 1:
            raise ConfigError(f"--below-confidence must be above 0 and at most 1, not {self.below_confidence}")

    @property
    def picks_lines(self) -> bool:
        return self.failed or bool(self.errors) or self.below_confidence is not None or bool(self.flags)

    def reasons(self, campaign_id: int) -> dict[str, Any]:
        """One SQL condition on ``line`` per reason, named as the operator asked for it."""
        in_campaign = _LINE.c.campaign_id == campaign_id
        reasons: dict[str, Any] = {}
        failed_shards = select(_SHARD.c.id).where(
            _SHARD.c.campaign_id == campaign_id, _SHARD.c.state.in_([ShardState.FAILED.value, ShardState.QUARANTINED.value])
        )
        if self.failed or not (self.picks_lines or self.shards):
            reasons["failed shards"] = and_(in_campaign, _LINE.c.shard_id.in_(failed_shards), _LINE.c.status == LineStatus.PENDING.value)
        if not (self.picks_lines or self.shards):
            reasons["errors"] = and_(in_campaign, _LINE.c.status == LineStatus.ERROR.value, _LINE.c.error_class != WorkerCrash.__name__)
        if self.errors:
            reasons[f"errors {','.join(self.errors)}"] = and_(
                in_campaign, _LINE.c.status == LineStatus.ERROR.value, _LINE.c.error_class.in_(self.errors)
            )
        if self.below_confidence is not None:
            reasons[f"confidence below {self.below_confidence}"] = and_(
                in_campaign, _LINE.c.status == LineStatus.OK.value, _LINE.c.confidence < self.below_confidence
            )
        if self.flags:
            reasons[f"flags {','.join(self.flags)}"] = and_(
                in_campaign, _LINE.c.status == LineStatus.OK.value, has_any_flag(_LINE.c.flags, self.flags)
            )
        if self.shards and not self.picks_lines:
            reasons[f"shards {','.join(map(str, self.shards))}"] = in_campaign
        if self.shards:
            chosen = select(_SHARD.c.id).where(_SHARD.c.campaign_id == campaign_id, _SHARD.c.index.in_(self.shards))
            reasons = {name: and_(condition, _LINE.c.shard_id.in_(chosen)) for name, condition in reasons.items()}
        return reasons


@dataclass
class RetryPlan:
    """What a retry would do: lines per reason, the shards, examples, and lines left alone."""

    lines_by_reason: dict[str, int]
    lines: int
    shard_ids: list[int]
    shard_indexes: list[int]
    examples: list[str]
    running: int  # selected lines in shards a live worker holds now: left alone

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Selection:
    """A selector as SQL, at one moment: lines per reason, all picked lines, and the shards workers hold now."""

    reasons: dict[str, Any]
    picked: Any
    live: Any  # ids of shards a live worker holds: their lines are left alone

    @classmethod
    def of(cls, campaign_id: int, selector: RetrySelector) -> _Selection:
        reasons = selector.reasons(campaign_id)
        live = select(_SHARD.c.id).where(_SHARD.c.campaign_id == campaign_id, held_by_a_worker(utcnow()))
        return cls(reasons, or_(*reasons.values()) if reasons else false(), live)

    @property
    def chosen(self) -> Any:
        """The picked lines a retry marks: those outside shards a worker holds."""
        return and_(self.picked, _LINE.c.shard_id.not_in(self.live))


def plan(url: str, campaign_id: int, selector: RetrySelector) -> RetryPlan:
    """Count what ``selector`` picks, without changing anything (``--dry-run`` prints this)."""
    return _plan(url, campaign_id, selector, _Selection.of(campaign_id, selector))


def _plan(url: str, campaign_id: int, selector: RetrySelector, selection: _Selection) -> RetryPlan:
    with get_engine(url).connect() as conn:
        _check_shards(conn, campaign_id, selector.shards)
        counts = {name: conn.execute(select(func.count()).where(condition)).scalar_one() for name, condition in selection.reasons.items()}
        running = conn.execute(select(func.count()).where(selection.picked, _LINE.c.shard_id.in_(selection.live))).scalar_one()
        chosen = selection.chosen
        lines = conn.execute(select(func.count()).where(chosen)).scalar_one()
        shards = conn.execute(
            select(_SHARD.c.id, _SHARD.c.index).where(_SHARD.c.id.in_(select(_LINE.c.shard_id).where(chosen))).order_by(_SHARD.c.index)
        ).all()
        examples = list(conn.execute(select(_LINE.c.key).where(chosen).order_by(_LINE.c.key).limit(EXAMPLES)).scalars())
    return RetryPlan(
        lines_by_reason=counts,
        lines=lines,
        shard_ids=[s.id for s in shards],
        shard_indexes=[s.index for s in shards],
        examples=examples,
        running=running,
    )


def _check_shards(conn: Connection, campaign_id: int, indexes: tuple[int, ...]) -> None:
    """``ConfigError`` naming the shard indexes the campaign does not have, before any line is counted."""
    if not indexes:
        return
    in_campaign = _SHARD.c.campaign_id == campaign_id
    known = set(conn.execute(select(_SHARD.c.index).where(in_campaign, _SHARD.c.index.in_(indexes))).scalars())
    unknown = sorted(set(indexes) - known)
    if unknown:
        last = conn.execute(select(func.max(_SHARD.c.index)).where(in_campaign)).scalar_one()
        have = "none yet" if last is None else f"0 to {last}"
        raise ConfigError(f"no shard with index {', '.join(map(str, unknown))} in this campaign (its shards: {have})")


def requested_by() -> str:
    """``user@host`` of whoever runs the command, for the retry log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def apply(url: str, campaign_id: int, selector: RetrySelector, model: ModelRef | None) -> tuple[int | None, RetryPlan]:
    """Record the retry, mark its lines and set each shard's model; returns the retry id and what it covers.

    The caller then puts the shards back in line (``shards.reopen``) for the feeder, or runs them in process. A
    selector that picks nothing records nothing (the id is ``None``).
    """
    selection = _Selection.of(campaign_id, selector)
    covered = _plan(url, campaign_id, selector, selection)
    if not covered.lines:
        return None, covered
    model_id, model_revision = (model.source, model.revision or "") if model else (None, None)
    with get_engine(url).begin() as conn:
        retry_id = conn.execute(
            insert(_RETRY)
            .values(
                campaign_id=campaign_id,
                created_at=utcnow(),
                requested_by=requested_by(),
                selector={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(selector).items()},
                model_id=model_id,
                model_revision=model_revision,
                shard_count=len(covered.shard_ids),
                line_count=covered.lines,
            )
            .returning(_RETRY.c.id)
        ).scalar_one()
        conn.execute(update(_LINE).where(selection.chosen).values(retry_id=retry_id))
        shards.override_model(conn, covered.shard_ids, model_id, model_revision)
    return retry_id, covered
