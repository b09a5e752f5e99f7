"""The detection library's parts that need no network: the registry, the PAGE file of a detected
page, and the matching that scores a detector."""

from __future__ import annotations

import importlib.util

import pytest
from lxml import etree

from pisar.detect import INSTALL_HINT, DetectionUnavailable, check_available, load_detector
from pisar.detect.matching import match_lines
from pisar.detect.page_xml import page_xml
from pisar.detect.segmentation import DetectedLine, DetectedRegion, PageSegmentation
from pisar.errors import ConfigError
from pisar.layout import read_layout
from pisar.layout_schemas import schema
from tests.helpers.cli import assert_one_line_error, run_pisar


def box(left: int, top: int, right: int, bottom: int) -> tuple[tuple[int, int], ...]:
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def line(line_id: str, region: str | None, top: int, left: int = 10) -> DetectedLine:
    return DetectedLine(line_id, region, box(left, top, left + 300, top + 40), ((left, top + 32), (left + 300, top + 32)))


def test_without_the_detect_extra_a_detector_is_refused_in_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kraken" else found(name, *a))
    with pytest.raises(DetectionUnavailable) as refused:
        check_available("blla")
    assert str(refused.value) == f"line detection needs kraken: {INSTALL_HINT}"
    assert ".[detect]" in INSTALL_HINT and "--no-deps" in INSTALL_HINT


def test_an_unknown_detector_is_a_readable_error(embedded_env: dict[str, str], tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown detector 'yolo'"):
        load_detector("yolo")
    (tmp_path / "scans").mkdir()
    result = run_pisar(
        ["run", str(tmp_path / "scans"), "--layout", "detect", "--model", "models/demo"], {**embedded_env, "PISAR_DETECTOR": "yolo"}
    )
    assert_one_line_error(result, "unknown detector 'yolo'")


def test_a_detected_page_is_valid_page_xml_read_back_in_the_detectors_order() -> None:
    """Lines of one region in two runs (the order leaves it and comes back), lines in no region, and a
    region with no line: every line in a region, the reading order kept, the file valid."""
    found = PageSegmentation(
        1000,
        800,
        (
            DetectedRegion("r1", "text", box(0, 0, 500, 400)),
            DetectedRegion("r2", "text", box(500, 0, 999, 400)),
            DetectedRegion("r3", "marginalia", box(0, 700, 100, 799)),
        ),
        (line("l1", "r1", 10), line("l2", "r2", 10, 510), line("l3", "r1", 100), line("l4", None, 500), line("l5", None, 560)),
        "test",
    )
    data = page_xml(found, "fond/scan 1.jpg")
    assert schema("page").validate(etree.fromstring(data)), schema("page").error_log
    layout = read_layout(data)
    assert [(item.line_id, item.region_id) for item in layout.lines] == [
        ("l1", "r1"),
        ("l2", "r2"),
        ("l3", "r1_3"),
        ("l4", "g4"),
        ("l5", "g4"),
    ]
    assert layout.image == "scan 1.jpg" and (layout.width, layout.height) == (1000, 800)
    assert layout.lines[0].baseline == ((10, 42), (310, 42))
    assert b'id="r3"' in data  # the region with no line is kept


def test_matching_pairs_by_overlap_and_measures_the_order() -> None:
    truths = [box(0, 0, 100, 20), box(0, 30, 100, 50), box(0, 60, 100, 80)]
    detected = [box(0, 61, 100, 81), box(0, 29, 100, 49), box(500, 500, 600, 520), box(0, 1, 100, 21)]
    matching = match_lines(truths, detected)
    assert [(pair.truth, pair.detected) for pair in matching.pairs] == [(0, 3), (1, 1), (2, 0)]
    assert matching.matched == 3 and matching.detected == 4
    assert matching.order_tau == -1.0  # exactly reversed
    assert match_lines(truths, [box(0, 0, 100, 9)]).matched == 0  # under half the union: no match


def test_a_page_of_a_multi_page_file_is_named_by_its_key_and_decoded_alone(tmp_path) -> None:
    import io

    from PIL import Image

    from pisar.errors import NotAnImage
    from pisar.images import ImageLimits, decode_line
    from pisar.producer.detected_layouts import DetectedLayouts
    from pisar.sources.detected_pages import page_key, scan_frame

    assert page_key("f/vol.tif", 1) == "f/vol.tif" and page_key("f/vol.tif", 12) == "f/vol.tif#p12"
    assert scan_frame("f/vol.tif#p12") == ("f/vol.tif", 11) and scan_frame("f/vol.tif") == ("f/vol.tif", 0)
    assert scan_frame("f/odd#p1.tif") == ("f/odd#p1.tif", 0) and scan_frame("f/x.tif#p0") == ("f/x.tif#p0", 0)
    assert DetectedLayouts.file_name("f/vol.tif#p3") == "f/vol_p3.xml" and DetectedLayouts.file_name("f/vol.tif") == "f/vol.xml"
    data = io.BytesIO()
    first, second = Image.new("L", (40, 30), 0), Image.new("L", (50, 20), 255)
    first.save(data, format="TIFF", save_all=True, append_images=[second])
    limits = ImageLimits(max_pixels=10_000, min_side=4, max_side=1000)
    one, two = decode_line(data.getvalue(), limits), decode_line(data.getvalue(), limits, 1)
    assert (one.line.size, one.frames, one.notes) == ((40, 30), 2, ("first of 2 frames (TIFF)",))
    assert (two.line.size, two.line.getextrema(), two.notes) == ((50, 20), (255, 255), ("frame 2 of 2 (TIFF)",))
    with pytest.raises(NotAnImage, match="2 frames, not a frame 3"):
        decode_line(data.getvalue(), limits, 2)
