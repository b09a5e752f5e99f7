"""Writing a campaign's results: JSONL, CSV, Parquet, or per source folder as text, ALTO or PAGE XML.

The record fields (``pisar.constants.EXPORT_FIELDS``) are a stable contract; see the README.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select

from pisar.catalog.codecs import decode_word_confidences, encode_word_confidences
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line, LineStatus, Shard
from pisar.constants import EXPORT_FIELDS
from pisar.csv_cells import neutralise_row
from pisar.errors import ConfigError
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_annotations import write_annotations
from pisar.producer.export_ocr import OCR_FORMATS, write_ocr
from pisar.producer.export_pages import PAGE_FORMATS, Export, write_pages
from pisar.producer.export_parquet import write_parquet
from pisar.producer.export_writeback import write_back
from pisar.sources import line_source
from pisar.storage import Storage

_LINE = Line.__table__
_SHARD = Shard.__table__
_CAMPAIGN = Campaign.__table__
_FROM_KEY = ("page", "line_id")  # a page line's key is ``<page>#<line id>`` (``pisar.layout.line_key``)
FORMATS = ("jsonl", "csv", "parquet", *PAGE_FORMATS, *OCR_FORMATS, "annotations")
# JSON lets these stand raw inside strings, but Python's str.splitlines() and some JSON-lines readers
# break records at them; escaped, a record is always exactly one line whatever its key holds.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def jsonl_record(record: dict[str, Any]) -> str:
    """One JSON-lines record: UTF-8 text as it is, every line-breaking character escaped."""
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKERS) + "\n"


@dataclass(frozen=True)
class ExportFilter:
    """Which finished lines an export holds: ``pisar export --status/--min-confidence/--since``."""

    statuses: tuple[str, ...] = (LineStatus.OK.value, LineStatus.ERROR.value)
    min_confidence: float | None = None  # lines below it, and lines without a confidence, are left out
    since: datetime | None = None  # only lines finished at or after it

    def __post_init__(self) -> None:
        unknown = set(self.statuses) - {LineStatus.OK.value, LineStatus.ERROR.value}
        if unknown or not self.statuses:
            raise ConfigError(f"--status takes ok and/or error, not {', '.join(sorted(unknown)) or 'nothing'}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"--min-confidence must be between 0 and 1, not {self.min_confidence}")


def export_statement(campaign_id: int, only: ExportFilter, *, postgres: bool = True) -> Select:
    """The export's query: finished lines with their shard index and campaign layout, in key byte order."""
    key = _LINE.c.key.collate("C") if postgres else _LINE.c.key
    statement = (
        select(
            *(_LINE.c[name] for name in EXPORT_FIELDS if name in _LINE.c),
            _SHARD.c.index.label("shard"),
            select(_CAMPAIGN.c.layout).where(_CAMPAIGN.c.id == campaign_id).scalar_subquery().label("layout"),
        )
        .join(_SHARD, _SHARD.c.id == _LINE.c.shard_id)
        .where(_LINE.c.campaign_id == campaign_id, _LINE.c.status.in_(only.statuses))
        .order_by(key)
    )
    if only.min_confidence is not None:
        statement = statement.where(_LINE.c.confidence >= only.min_confidence)
    if only.since is not None:
        statement = statement.where(_LINE.c.finished_at >= only.since)
    return statement


def iter_records(url: str, campaign_id: int, only: ExportFilter | None = None) -> Iterator[dict[str, Any]]:
    """Finished lines as export records, streamed in key order (byte order, whatever the database's collation).

    Byte order keeps each folder's lines in one run, which the per-folder formats rely on.
    """
    statement = export_statement(campaign_id, only or ExportFilter(), postgres=get_engine(url).dialect.name == "postgresql")
    with get_engine(url).connect() as conn:
        for row in conn.execution_options(yield_per=2000).execute(statement).mappings():
            yield _record(row)


def _record(row: Any) -> dict[str, Any]:
    """One catalog row as an export record: the page and line id from a page line's key, the word confidences as numbers."""
    record = {name: row[name] for name in EXPORT_FIELDS if name not in _FROM_KEY}
    if record["finished_at"] is not None:
        record["finished_at"] = record["finished_at"].isoformat()
    record["word_confidences"] = decode_word_confidences(record["word_confidences"])
    page, line_id = line_source(row["layout"]).page_and_line(row["key"])
    record |= {"page": page, "line_id": line_id or None}  # a page whose XML could not be read: its one line has no id
    return {name: record[name] for name in EXPORT_FIELDS}


def export(
    url: str,
    campaign_id: int,
    fmt: str,
    output: str,
    only: ExportFilter | None = None,
    about: dict[str, str] | None = None,
    pages_from: Storage | None = None,
    name_of: Callable[[str], str] | None = None,
    base_url: str | None = None,
) -> Export:
    """Write the campaign's finished lines (as ``only`` selects) to ``output``; returns what was written.

    ``jsonl`` and ``csv`` write one file (``-`` = stdout), ``parquet`` one file, and ``txt``,
    ``alto`` and ``page`` a folder with one file per source folder (``producer/export_pages.py``).
    ``about`` (model, campaign) goes into the XML formats' metadata. ``pages_from``: a page
    campaign's source, whose PAGE files ``page`` rewrites with the readings (``producer/export_writeback.py``),
    or a detect campaign's stored layouts (``producer/detected_layouts.py``, ``name_of`` naming their files).
    ``miniocr``, ``hocr`` (``producer/export_ocr.py``) and ``annotations`` (``producer/export_annotations.py``,
    its files' ids under ``base_url``) write one file per page, with the lines' boxes from ``pages_from``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    records = iter_records(url, campaign_id, only)
    if fmt in (*OCR_FORMATS, "annotations"):
        if output == "-":
            raise ConfigError(f"--format {fmt} writes one file per page: give a folder with -o")
        if pages_from is None:
            raise ConfigError(f"--format {fmt} places lines on their pages: it is for page campaigns (--layout xml or detect)")
        if fmt == "annotations":
            return write_annotations(url, campaign_id, records, Path(output), about or {}, pages_from, base_url)
        return write_ocr(records, fmt, Path(output), about or {}, pages_from)
    if fmt in PAGE_FORMATS:
        if output == "-":
            raise ConfigError(f"--format {fmt} writes one file per source folder: give a folder with -o")
        if pages_from is not None and fmt in ("page", "alto"):
            return write_back(records, Path(output), about or {}, pages_from, fmt, name_of)
        return write_pages(records, fmt, Path(output), about or {})
    if fmt == "parquet":
        if output == "-":
            raise ConfigError("--format parquet needs a file: give -o PATH")
        with atomic_output(output, binary=True) as handle:
            return Export(records=write_parquet(records, handle))
    count = 0
    with atomic_output(output) as handle:
        if fmt == "csv":
            writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for record in records:
                writer.writerow(neutralise_row({**record, "word_confidences": encode_word_confidences(record["word_confidences"])}))
                count += 1
        else:
            for record in records:
                handle.write(jsonl_record(record))
                count += 1
    return Export(records=count)
