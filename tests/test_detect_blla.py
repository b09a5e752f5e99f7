"""kraken's blla as Pisar runs it (pisar/detect/blla.py) on a real Transkribus page: quality, and its PAGE XML.

Marked slow: one page costs 20-30 s of CPU here. The page's own PAGE file (44 lines, by a person
in Transkribus) is the ground truth: lines are matched by polygon IoU >= 0.5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pisar.detect import load_detector
from pisar.detect.matching import match_lines
from pisar.detect.page_xml import page_xml
from pisar.layout import read_layout
from pisar.layout_schemas import schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detected(kraken_page: Path):  # -> (PageSegmentation, PageLayout)
    detector = load_detector("blla", device="cpu")
    try:
        with Image.open(kraken_page / "170025120000003,0074.jpg") as image:
            found = detector.detect(image.convert("RGB"))
    finally:
        detector.close()
    return found, read_layout((kraken_page / "170025120000003,0074.xml").read_bytes())


def test_blla_finds_at_least_40_of_the_44_lines_with_their_reading_order(detected) -> None:
    found, truth = detected
    matching = match_lines([line.polygon for line in truth.lines], [line.polygon for line in found.lines])
    assert matching.matched >= 40, f"{matching.matched} of {matching.truths} matched ({matching.detected} detected)"
    assert matching.order_tau == 1.0
    assert found.detector.startswith("blla@kraken-7.1.1:blla.mlmodel:")


def test_the_detected_page_is_valid_page_xml_that_reads_back_in_the_detectors_order(detected) -> None:
    found, _ = detected
    data = page_xml(found, "fond/vol-1/170025120000003,0074.jpg")
    from lxml import etree

    document = etree.fromstring(data)
    assert schema("page").validate(document), schema("page").error_log
    layout = read_layout(data)
    assert layout.image == "170025120000003,0074.jpg"
    assert [line.line_id for line in layout.lines] == [line.line_id for line in found.lines]
    assert [line.polygon for line in layout.lines] == [line.polygon for line in found.lines]
    assert all(line.problem is None for line in layout.lines)


PASTED_PAGES, LINES_PER_PAGE = 2, 12


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory, print_lines: Path) -> Path:
    """Real print lines pasted onto pages (``scans/pNN.png``), each page's true layout beside it
    (``scans/pNN.xml``: the rectangles they were pasted at, their ground truth), and the same lines
    as line images with their ``.gt.txt`` (``lines/``)."""
    from tests.helpers.pages import page_xml as truth_xml
    from tests.helpers.pages import pasted_page, rectangle

    root = tmp_path_factory.mktemp("pasted")
    (root / "scans").mkdir()
    (root / "lines").mkdir()
    from pisar.train.data import is_held_out

    # Lines the demo model never trained on (its held-out split, models/demo/README.md): it reads the
    # ones it trained on perfectly, and would measure how it memorised them, not the cut lines.
    usable = [p for p in sorted(print_lines.glob("*.png")) if is_held_out(p.name, 0.11) and Image.open(p).width < 2300]
    for page in range(PASTED_PAGES):
        chosen = usable[page * LINES_PER_PAGE : (page + 1) * LINES_PER_PAGE]
        canvas, placed = pasted_page(chosen, seed=page)
        canvas.save(root / "scans" / f"p{page:02d}.png")
        lines, texts = [], {}
        for number, (path, (left, top)) in enumerate(placed):
            line_id = f"p{page:02d}l{number:02d}"
            lines.append((line_id, rectangle(left, top, *Image.open(path).size)))
            texts[line_id] = path.with_name(path.name.split(".")[0] + ".gt.txt").read_text(encoding="utf-8").strip()
            (root / "lines" / f"{line_id}.png").write_bytes(path.read_bytes())
            (root / "lines" / f"{line_id}.gt.txt").write_text(texts[line_id], encoding="utf-8")
        (root / "scans" / f"p{page:02d}.xml").write_bytes(truth_xml(f"p{page:02d}.png", canvas.size, lines, texts))
    return root


def test_every_pasted_line_is_found_and_read_as_well_as_the_line_image(pasted: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    """`pisar run --layout detect` with blla and the demo model on pages of real print lines: every
    line found (`pisar eval --gt-from-xml`), and their CER within 0.01 of the same lines read
    as line images."""
    import json

    from tests.helpers.cli import run_pisar
    from tests.helpers.paths import REPO

    env = {**embedded_env, "PISAR_DETECT_POLYGON_WORKERS": "1"}
    demo = str(REPO / "models" / "demo")
    detected = run_pisar(["run", str(pasted / "scans"), "--layout", "detect", "--model", demo, "-o", str(tmp_path / "d.jsonl")], env, 900)
    assert detected.returncode == 0, detected.stderr
    report = run_pisar(["eval", "scans", "--gt-from-xml", "-o", str(tmp_path / "eval-detect")], env)
    assert report.returncode == 0, report.stderr
    detect = json.loads(report.stdout)
    total = PASTED_PAGES * LINES_PER_PAGE
    assert detect["layout"]["truth_lines"] == total
    assert detect["layout"]["matched_lines"] == total, detect["layout"]
    # No order asserted here: the pasted lines sit at random offsets, and where short lines stand side
    # by side blla reads them as columns (its regions), a fair reading of such a page.
    assert detect["lines_scored"] == total

    lines = run_pisar(["run", str(pasted / "lines"), "--model", demo, "-o", str(tmp_path / "l.jsonl")], env, 900)
    assert lines.returncode == 0, lines.stderr
    read = json.loads(run_pisar(["eval", "lines", "-o", str(tmp_path / "eval-lines")], env).stdout)
    assert read["lines_scored"] == total
    assert abs(detect["cer"] - read["cer"]) <= 0.01, (detect["cer"], read["cer"], detect["layout"]["page_cer"])
