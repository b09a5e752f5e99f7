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
