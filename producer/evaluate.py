"""How good a campaign's text is, and whether its confidence says which lines to check.

Scores every finished line against its ``NAME.gt.txt`` with jiwer (the model card's metric:
corpus CER/WER with default settings), then asks of each confidence measure how well it ranks
errors: Spearman correlation with line CER and a calibration table by confidence decile.
"""

from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from pisar.catalog.models import Campaign
from pisar.csv_cells import neutralise_row
from pisar.groundtruth import normalizer, read_layout_transcriptions, read_transcription
from pisar.producer.export import iter_records
from pisar.storage import Storage

#: The confidence measures Pisar stores, compared as error predictors.
MEASURES = ("confidence", "min_token_prob")
BAD_LINE_CER = 0.1


@dataclass
class LineScore:
    """One line: what it should say, what the model said, how wrong and how sure."""

    key: str
    reference: str
    hypothesis: str
    cer: float
    confidence: float | None
    min_token_prob: float | None
    status: str


@dataclass
class EvalReport:
    """The JSON summary written beside the per-line table; keys are stable for run-to-run comparison."""

    campaign: str
    model: str
    model_revision: str
    normalization: str
    lines_scored: int
    lines_error: int
    lines_without_gt: int
    cer: float | None
    wer: float | None
    spearman: dict[str, float | None] = field(default_factory=dict)
    better_error_predictor: str | None = None
    calibration: list[dict[str, Any]] = field(default_factory=list)
    layout: dict[str, Any] | None = None  # a detect campaign: its lines against the true layouts (producer/evaluate_pages.py)


def score_lines(url: str, campaign: Campaign, gt: Storage, normalization: str, from_layouts: bool = False) -> tuple[list[LineScore], int]:
    """Pair every finished line with its ground truth (``NAME.gt.txt`` beside each image, or with
    ``from_layouts`` the text a page line's own PAGE/ALTO file holds); returns the scores and how many had none."""
    normalize = normalizer(normalization)
    records = list(iter_records(url, campaign.id))
    if from_layouts:
        references = read_layout_transcriptions(gt, [r["key"] for r in records])
    else:
        with ThreadPoolExecutor(16) as pool:
            references = list(pool.map(lambda r: read_transcription(gt, r["key"]), records))
    scores, missing = [], 0
    for record, reference in zip(records, references, strict=True):
        if not reference:
            missing += 1
            continue
        reference = normalize(reference)
        hypothesis = normalize(record["text"] or "")
        scores.append(
            LineScore(
                key=record["key"],
                reference=reference,
                hypothesis=hypothesis,
                cer=float(jiwer.cer(reference, hypothesis)),
                confidence=record["confidence"],
                min_token_prob=record["min_token_prob"],
                status=record["status"],
            )
        )
    return scores, missing


def spearman(scores: list[LineScore], measure: str) -> float | None:
    """Rank correlation of a confidence measure with line CER; negative means it predicts errors.

    Pearson's r of the average ranks (ties share the mean of their ranks), as ``scipy.stats.spearmanr``
    computes it. Not scipy itself: installed, it is imported by every process that loads a model
    (transformers' loss utilities look for it), 0.47 s of a worker's 5.7 s of imports here, for this one call.
    """
    pairs = [(getattr(s, measure), s.cer) for s in scores if getattr(s, measure) is not None]
    if len(pairs) < 3:
        return None
    return rank_correlation([p[0] for p in pairs], [p[1] for p in pairs])


def rank_correlation(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho of two equally long sequences; ``None`` when either is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    spread = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return None if spread == 0 else float(dx @ dy) / spread


def average_ranks(values: list[float]) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span (``rankdata(method="average")``)."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="mergesort")
    ordered = data[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(data)]
    ranks = np.empty(len(data))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def calibration(scores: list[LineScore], measure: str = "confidence", bins: int = 10) -> list[dict[str, Any]]:
    """Lines sorted by confidence, cut into ``bins`` equal groups (decile 1 = least confident)."""
    ranked = sorted((s for s in scores if getattr(s, measure) is not None), key=lambda s: getattr(s, measure))
    table = []
    for index, group in enumerate(np.array_split(np.array(ranked, dtype=object), bins), start=1):
        if not len(group):
            continue
        cers = [s.cer for s in group]
        table.append(
            {
                "decile": index,
                "lines": len(group),
                "confidence_min": float(getattr(group[0], measure)),
                "confidence_max": float(getattr(group[-1], measure)),
                "mean_cer": float(np.mean(cers)),
                "share_cer_over_0_1": float(np.mean([c > BAD_LINE_CER for c in cers])),
            }
        )
    return table


def summarize(campaign: Campaign, scores: list[LineScore], missing: int, normalization: str) -> EvalReport:
    """Corpus CER/WER (jiwer over all pairs), Spearman per measure, calibration by decile."""
    references = [s.reference for s in scores]
    hypotheses = [s.hypothesis for s in scores]
    rhos = {measure: spearman(scores, measure) for measure in MEASURES}
    ranked = [m for m in MEASURES if rhos[m] is not None]
    return EvalReport(
        campaign=campaign.name,
        model=campaign.model_id,
        model_revision=campaign.model_revision,
        normalization=normalization,
        lines_scored=len(scores),
        lines_error=sum(1 for s in scores if s.status == "error"),
        lines_without_gt=missing,
        cer=float(jiwer.cer(references, hypotheses)) if scores else None,
        wer=float(jiwer.wer(references, hypotheses)) if scores else None,
        spearman=rhos,
        better_error_predictor=min(ranked, key=lambda m: rhos[m]) if ranked else None,
        calibration=calibration(scores),
    )


def write_outputs(report: EvalReport, scores: list[LineScore], out_dir: Path) -> dict[str, Path]:
    """``lines.csv`` (per line), ``summary.json`` and ``calibration.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"lines": out_dir / "lines.csv", "summary": out_dir / "summary.json", "plot": out_dir / "calibration.png"}
    with paths["lines"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["key", "reference", "hypothesis", "cer", "confidence", "min_token_prob", "status"])
        writer.writeheader()
        for score in scores:
            writer.writerow(neutralise_row(asdict(score)))  # keys and texts are data, never formulas
    paths["summary"].write_text(json.dumps(asdict(report), ensure_ascii=False, indent=2), encoding="utf-8")
    plot_calibration(report, paths["plot"])
    return paths


def plot_calibration(report: EvalReport, path: Path) -> None:
    """Mean CER and the share of bad lines per confidence decile: a falling curve is a useful confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deciles = [row["decile"] for row in report.calibration]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    axis.bar(deciles, [row["mean_cer"] for row in report.calibration], color="#4a78b5", label="mean CER")
    axis.set_xlabel("confidence decile (1 = least confident)")
    axis.set_ylabel("mean CER")
    share = axis.twinx()
    share.plot(
        deciles, [row["share_cer_over_0_1"] for row in report.calibration], color="#c0392b", marker="o", label="lines with CER > 0.1"
    )
    share.set_ylabel("share of lines with CER > 0.1")
    share.set_ylim(0, 1)
    rho = report.spearman.get("confidence")
    cer = f"{report.cer:.3f}" if report.cer is not None else "n/a"
    axis.set_title(f"{report.campaign}: CER {cer}, Spearman(confidence, CER) {rho if rho is None else round(rho, 3)}")
    axis.set_xticks(deciles)
    figure.legend(loc="upper left", bbox_to_anchor=(0.1, 0.88))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
