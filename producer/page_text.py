"""A page campaign's readings gathered by page, each line with its box on the page: what the search and
viewer formats (MiniOCR, hOCR, IIIF annotations) are written from.

Records arrive in key order, so a page's lines come in one run. Its layout (the archive's PAGE/ALTO
file, a linked IIIF layout, or a detected scan's stored layout: ``pages_from``) is read once for the
boxes: a line's box is its polygon's bounding box in the scan's pixels. Pisar does not align words
with the scan, so a word's box is its line's (the formats say "the line's box where a word's is not
known"). Error lines have no text and are counted, not written; a page whose layout can no longer be
read is counted and left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

from pisar.errors import LineError
from pisar.layout import read_layout
from pisar.words import confident_words

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in the scan's pixels


class LayoutFiles(Protocol):
    def read(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class LineText:
    line_id: str
    text: str
    confidence: float | None
    words: list[tuple[str, float | None]]  # each word with its confidence
    box: Box
    order: int


@dataclass
class PageText:
    page: str  # the layout's key (``<manifest>/p0001.xml`` for IIIF)
    image: str | None  # the scan's key
    width: int
    height: int
    lines: list[LineText] = field(default_factory=list)


@dataclass
class Gathered:
    """What the gathering left out, for the export's summary."""

    error_lines: int = 0
    pages_unread: list[str] = field(default_factory=list)


def page_texts(records: Iterable[dict[str, Any]], pages_from: LayoutFiles, left_out: Gathered) -> Iterator[PageText]:
    """Each page with text, its lines in reading order with their boxes."""
    for page, run in groupby(records, key=lambda record: record["page"]):
        readings = []
        for record in run:
            if record["status"] != "ok" or record["text"] is None:
                left_out.error_lines += 1
            else:
                readings.append(record)
        if not readings:
            continue
        try:
            layout = read_layout(pages_from.read(page), page)
        except LineError:
            left_out.pages_unread.append(page)
            continue
        boxes = {line.line_id: line.box for line in layout.lines}
        width = layout.width or max((box[2] for box in boxes.values() if box), default=1)
        height = layout.height or max((box[3] for box in boxes.values() if box), default=1)
        text = PageText(page, readings[0]["image"], width, height)
        for record in readings:
            box = boxes.get(record["line_id"]) or (0, 0, width, height)
            words = confident_words(record["text"], record["word_confidences"], record["confidence"])
            text.lines.append(LineText(record["line_id"], record["text"], record["confidence"], words, box, record["reading_order"] or 0))
        text.lines.sort(key=lambda line: line.order)
        yield text
