"""A shard's readings as catalog rows: one ``LineResult`` per line, its reading or its error, and its place on a page."""

from __future__ import annotations

from dataclasses import asdict

from pisar.catalog.bulk import LineResult
from pisar.catalog.models import LineStatus, utcnow
from pisar.errors import LineError
from pisar.reader import LineOutcome
from pisar.sources import Prepared


def line_row(item: Prepared, outcome: LineOutcome, worker: str, model: str) -> LineResult:
    """The catalog's row for one line read by ``worker`` with ``model`` (``id@revision``)."""
    common = {"key": item.key, "worker": worker, "finished_at": utcnow(), "model": model, **(asdict(item.place) if item.place else {})}
    if isinstance(outcome, LineError):
        return LineResult(**common, status=LineStatus.ERROR.value, error_class=outcome.error_class, error=str(outcome))
    width, height = item.size or (None, None)
    return LineResult(
        **common,
        status=LineStatus.OK.value,
        text=outcome.text,
        confidence=outcome.confidence,
        min_token_prob=outcome.min_token_prob,
        token_count=outcome.token_count,
        note=item.note,
        flags=outcome.flags,
        width=width,
        height=height,
        word_confidences=outcome.word_confidences,
    )


def shard_rows(lines: list[tuple[Prepared, LineOutcome]], worker: str, model: str) -> list[LineResult]:
    """Every line's row, in the order given."""
    return [line_row(item, outcome, worker, model) for item, outcome in lines]
