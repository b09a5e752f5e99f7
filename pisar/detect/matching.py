"""Detected lines against a ground-truth layout: which line is which, by polygon overlap.

Used to score a detector (tests, ``bench/detect.py``) and a detected campaign (``pisar eval
--gt-from-xml``). Pairs are chosen greedily by intersection over union, best first, each line in
at most one pair; a pair counts from ``min_iou`` (0.5, the usual threshold for line detection).
The reading order is kept when the matched detected lines come in the same order as their truths
(Kendall's tau over the pairs: 1.0 is the same order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Polygon = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class LineMatch:
    truth: int  # index into the truth lines (their reading order)
    detected: int  # index into the detected lines (their reading order)
    iou: float


@dataclass(frozen=True)
class Matching:
    pairs: tuple[LineMatch, ...]
    truths: int
    detected: int

    @property
    def matched(self) -> int:
        return len(self.pairs)

    @property
    def order_tau(self) -> float:
        """Kendall's tau between the truth order and the detected order of the matched lines."""
        ranks = [pair.detected for pair in sorted(self.pairs, key=lambda pair: pair.truth)]
        n = len(ranks)
        if n < 2:
            return 1.0
        concordant = sum(1 for i in range(n) for j in range(i + 1, n) if ranks[i] < ranks[j])
        return (2 * concordant - n * (n - 1) / 2) / (n * (n - 1) / 2)


def _shape(points: Polygon):
    import shapely.geometry as geom

    shape = geom.Polygon(points) if len(points) >= 3 else geom.Polygon()
    return shape if shape.is_valid else shape.buffer(0)


def match_lines(truths: Sequence[Polygon], detected: Sequence[Polygon], min_iou: float = 0.5) -> Matching:
    """Pair each truth line with at most one detected line, best overlap first."""
    from shapely.strtree import STRtree

    truth_shapes = [_shape(points) for points in truths]
    found_shapes = [_shape(points) for points in detected]
    tree = STRtree(found_shapes)
    candidates = []
    for t, truth in enumerate(truth_shapes):
        if truth.is_empty:
            continue
        for d in tree.query(truth):
            found = found_shapes[int(d)]
            union = truth.union(found).area
            iou = truth.intersection(found).area / union if union else 0.0
            if iou >= min_iou:
                candidates.append((iou, t, int(d)))
    taken_truths: set[int] = set()
    taken_found: set[int] = set()
    pairs = []
    for iou, t, d in sorted(candidates, reverse=True):
        if t not in taken_truths and d not in taken_found:
            taken_truths.add(t)
            taken_found.add(d)
            pairs.append(LineMatch(t, d, iou))
    return Matching(tuple(sorted(pairs, key=lambda pair: pair.truth)), len(truths), len(detected))
