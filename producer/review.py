"""`pisar review`: a sample for people to check, and their corrections back as ground truth.

``write_package`` picks ok lines stratified by confidence (equal numbers from each confidence
band, so the doubtful lines are not drowned by the sure ones), copies their images, and writes
``index.html`` (each image beside its text and confidence) and ``corrections.csv``. A reviewer
sets ``status`` to ``ok`` (the text is right) or ``fixed`` (after editing ``text``); rows left at
``todo`` are ignored. ``import_corrections`` turns the reviewed rows into ``NAME.png`` +
``NAME.gt.txt`` pairs under ``groundtruth/``, the layout ``pisar eval --gt`` and ``pisar train`` read.
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, LineStatus
from pisar.csv_cells import neutralise_row, restore
from pisar.errors import ConfigError, LineError
from pisar.groundtruth import gt_key
from pisar.storage import Storage

_LINE = Line.__table__
COLUMNS = ("key", "image", "confidence", "band", "status", "text", "model_text")
REVIEWED = ("ok", "fixed")
_UNSAFE_NAME = re.compile(r"[^\w.\-]+")


@dataclass
class Sampled:
    key: str
    text: str
    confidence: float
    band: int


def sample(url: str, campaign_id: int, count: int, bands: int = 10) -> list[Sampled]:
    """Up to ``count`` ok lines, as evenly as possible from ``bands`` confidence bands; the same every time.

    Within a band the pick is a fixed pseudo-random order of line ids (Knuth's multiplicative
    hash), so a campaign gives the same sample on every run and database.
    """
    per_band = -(-count // bands)
    band = func.ntile(bands).over(order_by=_LINE.c.confidence).label("band")
    scattered = (_LINE.c.id * 2654435761) % 4294967296
    ranked = (
        select(_LINE.c.key, _LINE.c.text, _LINE.c.confidence, band, scattered.label("scatter"))
        .where(_LINE.c.campaign_id == campaign_id, _LINE.c.status == LineStatus.OK.value, _LINE.c.confidence.is_not(None))
        .subquery()
    )
    within = func.row_number().over(partition_by=ranked.c.band, order_by=ranked.c.scatter).label("within")
    picked = select(ranked.c.key, ranked.c.text, ranked.c.confidence, ranked.c.band, within).subquery()
    statement = (
        select(picked.c.key, picked.c.text, picked.c.confidence, picked.c.band)
        .where(picked.c.within <= per_band)
        .order_by(picked.c.confidence, picked.c.key)
    )
    with get_engine(url).connect() as conn:
        rows = [Sampled(k, t or "", c, b) for k, t, c, b in conn.execute(statement)]
    if len(rows) > count:  # per_band is rounded up: drop the surplus at the most confident end
        rows = rows[:count]
    return rows


def write_package(lines: list[Sampled], storage: Storage, folder: Path, campaign: str) -> int:
    """Copy the images and write ``index.html`` and ``corrections.csv`` into ``folder``; returns the lines written."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        name = f"{number:05d}_{_UNSAFE_NAME.sub('_', PurePosixPath(line.key).name)[-80:]}"
        try:
            (images / name).write_bytes(storage.read(line.key))
        except LineError as exc:
            raise ConfigError(f"cannot copy {line.key!r} for review: {exc}") from None
        rows.append(
            {
                "key": line.key,
                "image": f"images/{name}",
                "confidence": f"{line.confidence:.4f}",
                "band": line.band,
                "status": "todo",
                "text": line.text,
                "model_text": line.text,
            }
        )
    with (folder / "corrections.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(neutralise_row(row) for row in rows)  # keys and texts are data, never formulas
    (folder / "index.html").write_text(_page(rows, campaign), encoding="utf-8")
    return len(rows)


def _page(rows: list[dict[str, Any]], campaign: str) -> str:
    """One table, no scripts: image, text, confidence and key of each sampled line."""
    body = "\n".join(
        "<tr>"
        f'<td class="n">{number}</td>'
        f'<td><img src="{html.escape(row["image"])}" alt="line {number}" loading="lazy"></td>'
        f'<td class="text">{html.escape(row["text"])}</td>'
        f'<td class="n">{row["confidence"]}</td>'
        f'<td class="key">{html.escape(row["key"])}</td>'
        "</tr>"
        for number, row in enumerate(rows, 1)
    )
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'">
<title>Review: {html.escape(campaign)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ccc; padding: .4em; vertical-align: middle; text-align: left; }}
img {{ max-width: 900px; max-height: 120px; }} .text {{ font-size: 1.2em; }} .n {{ text-align: right; }}
.key {{ font-size: .8em; color: #555; word-break: break-all; }}
</style></head><body>
<h1>Review: {html.escape(campaign)}</h1>
<p>{len(rows)} lines, from the least to the most confident. In <code>corrections.csv</code>, set
<code>status</code> to <code>ok</code> when the text is right, or correct <code>text</code> and set
<code>fixed</code>; rows left at <code>todo</code> are ignored. Then run
<code>pisar review-import corrections.csv</code>.</p>
<table><tr><th>#</th><th>image</th><th>text</th><th>confidence</th><th>key</th></tr>
{body}
</table></body></html>
"""


@dataclass
class Imported:
    pairs: int
    fixed: int
    todo: int
    folder: Path


def import_corrections(csv_path: Path) -> Imported:
    """Write ``groundtruth/KEY`` (the image) and ``groundtruth/KEY.gt.txt`` for every reviewed row."""
    folder = csv_path.parent
    target = folder / "groundtruth"
    pairs = fixed = todo = 0
    with csv_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(f"{csv_path} is not a review sheet: no column {', '.join(sorted(missing))}")
        for number, cells in enumerate(reader, 2):
            row = {name: restore(value or "") for name, value in cells.items() if name is not None}
            status = (row["status"] or "").strip().lower()
            if status not in (*REVIEWED, "todo", ""):
                raise ConfigError(f"{csv_path}, line {number}: status {row['status']!r} is not ok, fixed or todo")
            if status not in REVIEWED:
                todo += 1
                continue
            image = _inside(target, row["key"], csv_path, number)
            source = _inside(folder, row["image"], csv_path, number)
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(source.read_bytes())
            (target / gt_key(row["key"])).write_text(row["text"].strip() + "\n", encoding="utf-8")
            pairs += 1
            fixed += status == "fixed"
    return Imported(pairs, fixed, todo, target)


def _inside(root: Path, relative: str, csv_path: Path, number: int) -> Path:
    """``root / relative``, refused when a key or path would leave ``root`` (``..``, absolute paths)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not relative:
        raise ConfigError(f"{csv_path}, line {number}: {relative!r} points outside {root}")
    return path
