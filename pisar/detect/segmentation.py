"""What a detector finds on a page: regions and text lines with their geometry, in reading order.

Plain data, no torch: the detect worker commits it, the catalog stores it as PAGE XML
(``page_xml.py``), and every reader of page lines reads that file like one an archive supplied.
Ids are given by position (``r1``, ``l1``, ...), so the same page detected twice by the same
detector gives the same line keys (``<scan>#l3``) and a second commit changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

Point = tuple[int, int]


@dataclass(frozen=True)
class DetectedRegion:
    region_id: str
    kind: str  # the detector's class: "text", "marginalia", ...
    polygon: tuple[Point, ...]


@dataclass(frozen=True)
class DetectedLine:
    line_id: str
    region_id: str | None  # the region its baseline lies in, if any
    polygon: tuple[Point, ...]
    baseline: tuple[Point, ...]


@dataclass(frozen=True)
class PageSegmentation:
    """A page's regions and lines; ``lines`` are in reading order."""

    width: int
    height: int
    regions: tuple[DetectedRegion, ...]
    lines: tuple[DetectedLine, ...]
    detector: str  # what found them: ``blla@kraken-7.1.1:<model sha256[:12]>``


def clamp(points: object, width: int, height: int) -> tuple[Point, ...]:
    """Points as whole pixels inside the page (a detector's polygons may reach a pixel past its edge)."""
    return tuple((min(max(int(round(float(x))), 0), width - 1), min(max(int(round(float(y))), 0), height - 1)) for x, y in points)  # type: ignore[attr-defined]
