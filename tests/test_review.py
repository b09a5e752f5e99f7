"""`pisar review`: a confidence-stratified sample as HTML + CSV, and reviewed rows back as ground truth for `pisar eval`."""

from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import run_pisar
from tests.helpers.paths import DEMO_MODEL

pytestmark = pytest.mark.slow

ODD = 'odd <b>&"name".png'  # a key that is markup: the page must show it, never run it


def test_review_package_then_import_as_ground_truth(print_lines: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "лист 1").mkdir(parents=True)
    lines = sorted(print_lines.glob("*.png"))[:60]
    for path in lines[:59]:
        shutil.copy(path, source / "лист 1" / path.name)
    shutil.copy(lines[59], source / ODD)
    ran = run_pisar(["run", str(source), "--model", str(DEMO_MODEL), "--name", "rev", "-o", str(tmp_path / "r.jsonl")], embedded_env)
    assert ran.returncode == 0, ran.stderr
    records = {r["key"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines())}

    package = tmp_path / "package"
    made = run_pisar(["review", "rev", "--sample", "20", "-o", str(package)], embedded_env)
    assert made.returncode == 0, made.stderr
    with (package / "corrections.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and len({r["key"] for r in rows}) == 20
    confidences = sorted(records[k]["confidence"] for k in records)
    assert float(rows[0]["confidence"]) <= confidences[len(confidences) // 10], "the least confident band is in the sample"
    assert float(rows[-1]["confidence"]) >= confidences[-len(confidences) // 10], "and so is the most confident one"
    assert {r["band"] for r in rows} == {str(b) for b in range(1, 11)}, "two lines from each of ten bands"
    assert all((package / r["image"]).read_bytes() == (source / r["key"]).read_bytes() for r in rows)
    again = run_pisar(["review", "rev", "--sample", "20", "-o", str(tmp_path / "again")], embedded_env)
    assert again.returncode == 0 and (tmp_path / "again" / "corrections.csv").read_text(encoding="utf-8") == (
        package / "corrections.csv"
    ).read_text(encoding="utf-8"), "the same sample every time"

    page = (package / "index.html").read_text(encoding="utf-8")
    for row in rows:
        assert html.escape(row["text"]) in page and html.escape(row["key"]) in page
    assert "<b>" not in page and "<script" not in page

    # A reviewer confirms five lines, corrects one, and leaves the rest.
    rows[0]["status"], rows[0]["text"] = "fixed", "исправленный текст"
    for row in rows[1:6]:
        row["status"] = "ok"
    with (package / "corrections.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    imported = run_pisar(["review-import", str(package / "corrections.csv")], embedded_env)
    assert imported.returncode == 0, imported.stderr
    assert "6 reviewed lines (1 corrected)" in imported.stderr and "14 rows left at todo" in imported.stderr

    scored = run_pisar(["eval", "rev", "--gt", str(package / "groundtruth"), "-o", str(tmp_path / "eval")], embedded_env)
    assert scored.returncode == 0, scored.stderr
    assert "6 lines scored" in scored.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["cer"] > 0, "the corrected line differs from what the model read"


def test_import_refuses_a_sheet_that_points_outside_its_folder(tmp_path: Path, embedded_env: dict[str, str]) -> None:
    sheet = tmp_path / "corrections.csv"
    sheet.write_text("key,image,confidence,band,status,text,model_text\n../../etc/x.png,images/a.png,0.5,1,ok,t,t\n", encoding="utf-8")
    done = run_pisar(["review-import", str(sheet)], embedded_env)
    assert done.returncode != 0 and "points outside" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path.parent / "etc").exists()
