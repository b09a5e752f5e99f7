"""A detector that replays a stored result, so the detection pipeline is tested in seconds, not minutes.

``PISAR_DETECTOR=tests.helpers.stored_detector:StoredDetector`` (the documented ``module:Class``
seam): an all-white scan has no lines; a scan of exactly ``CRASH_SIZE`` makes the detector raise
(a detector failure, retried then quarantined); any other scan gets the
lines of the real Transkribus PAGE file in ``tests/data/pages`` (its regions, polygons, baselines
and reading order), scaled to the scan's size. Everything else (claiming, fencing, the catalog,
reading the lines) is the real code. blla itself is tested in ``tests/test_detect_blla.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from pisar.detect import DetectedLine, DetectedRegion, PageSegmentation
from pisar.detect.segmentation import clamp
from pisar.layout import read_layout

PAGE = Path(__file__).parents[1] / "data" / "pages" / "170025120000003,0074.xml"
CRASH_SIZE = (97, 61)
STORED = "tests.helpers.stored_detector:StoredDetector"
REPO_PATH = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
# `pisar` subprocesses detecting with the stored result: two scans to a read shard, two attempts
DETECT_ENV = {"PISAR_DETECTOR": STORED, "PISAR_DETECT_PAGES_PER_SHARD": "2", "PISAR_MAX_ATTEMPTS": "2", "PYTHONPATH": REPO_PATH}


class DetectorCrash(RuntimeError):
    """The stored detector's stand-in for a detector failing on one scan."""


class StoredDetector:
    name = "stored"

    def __init__(self, **_: Any) -> None:
        self.layout = read_layout(PAGE.read_bytes(), PAGE.name)

    def describe(self) -> str:
        return f"stored:{PAGE.name}"

    def close(self) -> None:
        pass

    def detect(self, image: Image.Image) -> PageSegmentation:
        width, height = image.size
        if image.size == CRASH_SIZE:
            raise DetectorCrash("the stored detector was told to fail on this scan")
        if image.convert("L").getextrema() == (255, 255):
            return PageSegmentation(width, height, (), (), self.describe())
        sx, sy = width / (self.layout.width or width), height / (self.layout.height or height)

        def scaled(points: Any) -> Any:
            return clamp(((x * sx, y * sy) for x, y in points), width, height)

        regions: dict[str, DetectedRegion] = {}
        lines = []
        for n, line in enumerate(self.layout.lines, 1):
            region = line.region_id or "r0"
            if region not in regions:
                regions[region] = DetectedRegion(region, "text", scaled(_box(self.layout.lines, region)))
            lines.append(DetectedLine(f"l{n}", region, scaled(line.polygon), scaled(line.baseline)))
        return PageSegmentation(width, height, tuple(regions.values()), tuple(lines), self.describe())


def _box(lines: Any, region: str) -> tuple[tuple[int, int], ...]:
    points = [p for line in lines if (line.region_id or "r0") == region for p in line.polygon]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return ((min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys)))


class Everywhere(StoredDetector):
    """Finds the stored lines on a blank scan too: `retry --scans-without-lines --detector` with another detector."""

    def describe(self) -> str:
        return f"everywhere:{PAGE.name}"

    def detect(self, image: Image.Image) -> PageSegmentation:
        found = super().detect(image.convert("L").point(lambda v: min(v, 254)))  # never all white
        return PageSegmentation(found.width, found.height, found.regions, found.lines, self.describe())


class FirstForty(StoredDetector):
    """Finds only the first 40 stored lines: a detection again that loses four of the lines read before."""

    def describe(self) -> str:
        return f"first-forty:{PAGE.name}"

    def detect(self, image: Image.Image) -> PageSegmentation:
        found = super().detect(image)
        return PageSegmentation(found.width, found.height, found.regions, found.lines[:40], self.describe())
