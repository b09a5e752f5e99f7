"""Writing a campaign's results as JSONL or CSV, one record per line image, in key order.

The record fields (``pisar.constants.EXPORT_FIELDS``) are a stable contract; see the README.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, LineStatus, Shard
from pisar.constants import EXPORT_FIELDS
from pisar.errors import ConfigError

_LINE = Line.__table__
_SHARD = Shard.__table__
FORMATS = ("jsonl", "csv")
# JSON lets these stand raw inside strings, but Python's str.splitlines() and some JSON-lines readers
# break records at them; escaped, a record is always exactly one line whatever its key holds.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def jsonl_record(record: dict[str, Any]) -> str:
    """One JSON-lines record: UTF-8 text as it is, every line-breaking character escaped."""
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKERS) + "\n"


def iter_records(url: str, campaign_id: int) -> Iterator[dict[str, Any]]:
    """Finished lines (ok or error) as export records, streamed in key order."""
    statement = (
        select(*(_LINE.c[name] for name in EXPORT_FIELDS if name in _LINE.c), _SHARD.c.index.label("shard"))
        .join(_SHARD, _SHARD.c.id == _LINE.c.shard_id)
        .where(_LINE.c.campaign_id == campaign_id, _LINE.c.status != LineStatus.PENDING.value)
        .order_by(_LINE.c.key)
    )
    with get_engine(url).connect() as conn:
        for row in conn.execution_options(yield_per=2000).execute(statement).mappings():
            record = {name: row[name] for name in EXPORT_FIELDS}
            if record["finished_at"] is not None:
                record["finished_at"] = record["finished_at"].isoformat()
            yield record


@contextmanager
def _atomic_output(output: str) -> Iterator[IO[str]]:
    """Write to a temporary file beside ``output`` and rename it into place on success."""
    if output == "-":
        yield sys.stdout
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(url: str, campaign_id: int, fmt: str, output: str) -> int:
    """Write every finished line of the campaign to ``output`` (``-`` = stdout); returns the count."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    count = 0
    with _atomic_output(output) as handle:
        if fmt == "csv":
            writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for record in iter_records(url, campaign_id):
                writer.writerow(record)
                count += 1
        else:
            for record in iter_records(url, campaign_id):
                handle.write(jsonl_record(record))
                count += 1
    return count
