"""The shipped demo model (models/demo): it loads through the normal path, reads its held-out split as
its model card says, and its confidence tells an archivist which lines to check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pisar.train.data import is_held_out
from tests.helpers.cli import run_pisar
from tests.helpers.paths import DEMO_MODEL, REPO

pytestmark = pytest.mark.slow

MAX_WEIGHTS_BYTES = 20 * 1024 * 1024


def card() -> dict[str, Any]:
    return json.loads((DEMO_MODEL / "training.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def held_out(print_lines: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's held-out lines (same key hash and share as its training run), copied with their names."""
    share = card()["config"]["val_share"]
    folder = tmp_path_factory.mktemp("held-out")
    for image in sorted(print_lines.glob("*.png")):
        if is_held_out(image.name, share):
            shutil.copy(image, folder)
            shutil.copy(image.with_name(image.name.replace(".bin.png", ".gt.txt")), folder)
    return folder


@pytest.fixture
def evaluation(held_out: Path, embedded_env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """`pisar eval` of the held-out split with the shipped model, through the normal loading path."""
    out = tmp_path / "eval"
    result = run_pisar(["eval", str(held_out), "--model", str(DEMO_MODEL), "-o", str(out)], embedded_env)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_the_demo_model_is_small_and_documented() -> None:
    weights = DEMO_MODEL / "model.safetensors"
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    summary = card()
    assert summary["val_lines"] >= 80 and summary["seconds"] <= 90 * 60
    assert summary["val_cer"] <= 0.10
    readme = (DEMO_MODEL / "README.md").read_text(encoding="utf-8")
    assert f"{summary['val_cer']:.4f}" in readme and "pisar train" in readme


def test_it_reads_the_held_out_split_as_its_card_says(evaluation: dict[str, Any]) -> None:
    summary = card()
    assert evaluation["lines_scored"] == summary["val_lines"] and evaluation["lines_error"] == 0
    assert abs(evaluation["cer"] - summary["val_cer"]) <= 0.01  # within one point: fp16 weights, Pisar's engine


def test_its_confidence_predicts_its_errors(evaluation: dict[str, Any]) -> None:
    assert evaluation["spearman"]["confidence"] <= -0.3
    deciles = evaluation["calibration"]
    least, most = deciles[0], deciles[-1]
    assert least["decile"] == 1 and least["mean_cer"] > most["mean_cer"]


def test_the_quick_start_command_prints_readable_russian(embedded_env: dict[str, str], tmp_path: Path) -> None:
    """What `make demo` runs: the shipped samples (all held out) read back close to their transcriptions."""
    import jiwer

    samples = REPO / "samples" / "print-lines"
    out = tmp_path / "results.jsonl"
    result = run_pisar(["run", str(samples), "--model", str(DEMO_MODEL), "--name", "samples", "-o", str(out), "--show", "20"], embedded_env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 20 and {r["status"] for r in records} == {"ok"}
    for record in records:
        assert record["key"] in result.stdout and record["text"] in result.stdout  # the table shows every line
    truth = [(samples / r["key"].replace(".bin.png", ".gt.txt")).read_text(encoding="utf-8").strip() for r in records]
    assert jiwer.cer(truth, [r["text"] for r in records]) <= 0.15
