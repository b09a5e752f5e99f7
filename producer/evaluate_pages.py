"""`pisar eval --gt-from-xml` on a detect campaign: each page against a ground-truth layout.

The ground truth of a scan ``f/0001.jpg`` is a PAGE or ALTO file ``f/0001.xml`` (or
``f/page/0001.xml``, where Transkribus exports put it) under ``--gt`` (default: the source), its
lines with their polygons and their text. Per page:

- the detected lines (the layout the catalog stores) are matched to the true ones by polygon IoU
  (``pisar.detect.matching``, 0.5): a matched line's reading is scored against its true line's text,
  as any line is (``LineScore``), so the usual CER, WER and calibration hold for the matched lines;
- recall and precision of the detection (matched over true, matched over detected) and whether the
  reading order was kept (Kendall's tau over the matched lines);
- the page's text: every detected line's reading in the detected order against every true line's
  text in the true order, joined by newlines: what a reader of the page gets, misses and merges included.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jiwer

from pisar.catalog.models import Campaign
from pisar.errors import LineError
from pisar.groundtruth import normalizer
from pisar.layout import read_layout, split_line_key
from pisar.producer.detected_layouts import DetectedLayouts
from pisar.producer.evaluate import LineScore
from pisar.producer.export import iter_records
from pisar.storage import Storage


@dataclass
class LayoutScores:
    """The detection side of a detect campaign's evaluation (``EvalReport.layout``)."""

    pages_scored: int
    pages_without_gt: int
    truth_lines: int
    detected_lines: int
    matched_lines: int
    line_recall: float | None
    line_precision: float | None
    order_tau_mean: float | None
    page_cer: float | None  # corpus CER of the pages' texts in reading order

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ground_truth_layout(gt: Storage, scan_key: str) -> bytes | None:
    """The ground-truth PAGE/ALTO file of a scan, where there is one."""
    path = PurePosixPath(scan_key)
    for candidate in (path.with_suffix(".xml"), path.parent / "page" / path.with_suffix(".xml").name):
        try:
            return gt.read(str(candidate))
        except LineError:
            continue
    return None


def score_detected(url: str, campaign: Campaign, gt: Storage, normalization: str) -> tuple[list[LineScore], int, LayoutScores]:
    """Line scores of the matched lines, how many finished lines had no true line, and the layout scores."""
    from pisar.detect.matching import match_lines

    normalize = normalizer(normalization)
    layouts = DetectedLayouts(url, campaign.id)
    by_scan: dict[str, dict[str, dict[str, Any]]] = {}
    for record in iter_records(url, campaign.id):
        scan, line_id = split_line_key(record["key"])
        by_scan.setdefault(scan, {})[line_id] = record
    scores: list[LineScore] = []
    missing = without_gt = truth_total = detected_total = matched_total = 0
    taus: list[float] = []
    page_refs: list[str] = []
    page_hyps: list[str] = []
    for scan, records in sorted(by_scan.items()):
        data = ground_truth_layout(gt, scan)
        try:
            truth = read_layout(data, scan) if data is not None else None
        except LineError:
            truth = None
        if truth is None:
            without_gt += 1
            missing += len(records)
            continue
        try:
            found = read_layout(layouts.read(scan), scan).lines
        except LineError:  # the scan could not be detected: every true line is missed
            found = []
        true_lines = [line for line in truth.lines if line.polygon]
        matching = match_lines([line.polygon for line in true_lines], [line.polygon for line in found])
        truth_total += len(true_lines)
        detected_total += len(found)
        matched_total += matching.matched
        taus.append(matching.order_tau)
        matched = set()
        for pair in matching.pairs:
            line = found[pair.detected]
            record = records.get(line.line_id)
            reference = (true_lines[pair.truth].text or "").strip()
            if record is None or not reference:
                continue
            matched.add(line.line_id)
            hypothesis = normalize(record["text"] or "")
            scores.append(
                LineScore(
                    key=record["key"],
                    reference=normalize(reference),
                    hypothesis=hypothesis,
                    cer=float(jiwer.cer(normalize(reference), hypothesis)),
                    confidence=record["confidence"],
                    min_token_prob=record["min_token_prob"],
                    status=record["status"],
                )
            )
        missing += sum(1 for line_id in records if line_id not in matched)
        reference_page = "\n".join(normalize((line.text or "").strip()) for line in true_lines if (line.text or "").strip())
        if reference_page:
            page_refs.append(reference_page)
            page_hyps.append("\n".join(normalize(records[line.line_id]["text"] or "") for line in found if line.line_id in records))
    return (
        scores,
        missing,
        LayoutScores(
            pages_scored=len(taus),
            pages_without_gt=without_gt,
            truth_lines=truth_total,
            detected_lines=detected_total,
            matched_lines=matched_total,
            line_recall=matched_total / truth_total if truth_total else None,
            line_precision=matched_total / detected_total if detected_total else None,
            order_tau_mean=statistics.fmean(taus) if taus else None,
            page_cer=float(jiwer.cer(page_refs, page_hyps)) if page_refs else None,
        ),
    )
