"""`pisar eval`: jiwer CER/WER on the same pairs, label normalization, confidence calibration outputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jiwer
import pytest
from PIL import Image

from pisar.errors import ConfigError
from pisar.groundtruth import gt_key, normalizer
from tests.helpers.cli import assert_one_line_error, run_pisar

pytestmark = pytest.mark.slow


def test_ground_truth_naming() -> None:
    assert gt_key("vol/0001.bin.png") == "vol/0001.gt.txt"
    assert gt_key("vol/0001.nrm.png") == "vol/0001.gt.txt"
    assert gt_key("0001.JPG") == "0001.gt.txt"
    assert gt_key("a.b/line.tif") == "a.b/line.gt.txt"


def test_rank_correlation_is_spearmans_rho_with_average_ranks_for_ties() -> None:
    from pisar.producer.evaluate import average_ranks, rank_correlation

    assert average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / 95**0.5)  # scipy.stats.spearmanr: 0.8207826816681233
    assert rank_correlation([0.9, 0.5, 0.1], [0.0, 0.2, 0.7]) == pytest.approx(-1.0)  # sure lines are right, unsure ones wrong
    assert rank_correlation([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None  # a constant measure predicts nothing


def test_naf_is_the_model_cards_map() -> None:
    assert normalizer("naf")("Вѣра и Іоаннъ въ мірѣ") == "Вера и Иоаннъ въ мире"
    assert normalizer("none")("Вѣра") == "Вѣра"
    with pytest.raises(ConfigError):
        normalizer("nfkc")


@pytest.fixture
def labelled(print_lines: Path, tmp_path: Path) -> Path:
    """30 labelled lines, 10 of them with pre-reform letters, and one image without a transcription."""
    pairs = sorted(print_lines.glob("*.gt.txt"))
    old = [p for p in pairs if any(ch in p.read_text(encoding="utf-8") for ch in "ѣѢіІ")][:10]
    chosen = old + [p for p in pairs if p not in old][:20]
    folder = tmp_path / "labelled"
    folder.mkdir()
    for gt in chosen:
        image = gt.with_name(gt.name.replace(".gt.txt", ".bin.png"))
        shutil.copy(image, folder)
        shutil.copy(gt, folder)
    shutil.copy(sorted(print_lines.glob("*.png"))[-1], folder / "unlabelled.png")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("normalization", ["none", "naf"])
def test_eval_matches_jiwer_on_the_same_pairs(
    labelled: Path, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path, normalization: str
) -> None:
    out = tmp_path / f"eval-{normalization}"
    result = run_pisar(
        ["eval", str(labelled), "--model", str(tiny_model), "--name", "lab", "--normalize", normalization, "-o", str(out)], embedded_env
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout)["cer"] == summary["cer"]

    exported = tmp_path / "export.jsonl"
    assert run_pisar(["export", "lab", "-o", str(exported)], embedded_env).returncode == 0
    records = {r["key"]: r for r in map(json.loads, exported.read_text(encoding="utf-8").splitlines())}
    normalize = normalizer(normalization)
    refs, hyps = [], []
    for key, record in sorted(records.items()):
        gt = labelled / gt_key(key)
        if gt.exists():
            refs.append(normalize(gt.read_text(encoding="utf-8").strip()))
            hyps.append(normalize(record["text"]))
    assert summary["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert summary["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert (summary["lines_scored"], summary["lines_without_gt"]) == (30, 1)

    rows = read_csv(out / "lines.csv")
    assert [r["reference"] for r in rows] == refs
    pre_reform = sum(any(ch in r for ch in "ѣѢіІ") for r in refs)
    assert pre_reform == (10 if normalization == "none" else 0)
    for row in rows:
        assert float(row["cer"]) == pytest.approx(jiwer.cer(row["reference"], row["hypothesis"]))

    deciles = summary["calibration"]
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert sum(d["lines"] for d in deciles) == 30
    assert all(d["confidence_min"] <= d["confidence_max"] for d in deciles)
    assert set(summary["spearman"]) == {"confidence", "min_token_prob"}
    assert summary["better_error_predictor"] in ("confidence", "min_token_prob")
    assert Image.open(out / "calibration.png").size[0] > 300


def test_eval_of_an_existing_campaign_with_separate_ground_truth(
    labelled: Path, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for image in labelled.glob("*.png"):
        shutil.copy(image, images)
    assert (
        run_pisar(
            ["run", str(images), "--model", str(tiny_model), "--name", "imgs", "-o", str(tmp_path / "r.jsonl")], embedded_env
        ).returncode
        == 0
    )
    without = run_pisar(["eval", "imgs", "-o", str(tmp_path / "e1")], embedded_env)
    assert without.returncode == 0, without.stderr
    assert json.loads(without.stdout)["lines_without_gt"] == 31
    with_gt = run_pisar(["eval", "imgs", "--gt", str(labelled), "-o", str(tmp_path / "e2")], embedded_env)
    assert with_gt.returncode == 0, with_gt.stderr
    assert json.loads(with_gt.stdout)["lines_scored"] == 30


def test_eval_errors_are_one_line(embedded_env: dict[str, str]) -> None:
    assert_one_line_error(run_pisar(["eval", "nope"], embedded_env), "no campaign named 'nope'")
    assert_one_line_error(run_pisar(["eval", "nope", "--normalize", "nfkc"], embedded_env), "unknown normalization 'nfkc'")
