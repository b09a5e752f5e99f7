"""Page layouts: PAGE (2013, 2019, the https namespace) and ALTO (v2-v4) read into lines with their ids,
geometry and reading order; bad files and lines recorded, never resolved entities; lines cut from a
scan by polygon or box, where a box around a pasted real line gives back exactly that line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops

from pisar.errors import DuplicateLineId, NoGeometry, NoLineId, UnreadableLayout
from pisar.layout import MAX_LAYOUT_BYTES, LayoutLine, read_layout
from pisar.page_crop import crop_line
from tests.helpers.pages import pasted_page, rectangle

PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_4 = "http://www.loc.gov/standards/alto/ns-v4#"


@pytest.fixture(scope="module")
def transkribus(kraken_page: Path) -> bytes:
    return (kraken_page / "170025120000003,0074.xml").read_bytes()


def test_the_transkribus_page_reads_whole_in_its_reading_order(transkribus: bytes) -> None:
    layout = read_layout(transkribus, "0074.xml")
    assert (layout.format, layout.version, layout.image) == ("page", "2013-07-15", "170025120000003,0074.jpg")
    assert (layout.width, layout.height, len(layout.lines)) == (2743, 3965, 44)
    assert [line.order for line in layout.lines] == list(range(44))
    assert len({line.line_id for line in layout.lines}) == 44 and all(line.problem is None for line in layout.lines)
    regions = list(dict.fromkeys(line.region_id for line in layout.lines))  # the ReadingOrder's regions, in its order
    assert regions == [
        "region_1469098609000_462",
        "region_1469098557906_461",
        "TextRegion_1520586482298_194",
        "TextRegion_1520586482298_193",
    ]
    first, second = layout.lines[0], layout.lines[1]
    assert (first.line_id, first.polygon, first.baseline, first.text) == (
        "line_1469098625593_463",
        ((2344, 182), (2428, 195), (2420, 244), (2336, 231)),
        ((2337, 226), (2421, 239)),
        "$pag:39",
    )
    assert second.text == "$-nor su hijo, De todos sus bienes, con los pactos" and second.box == (789, 224, 2399, 310)
    assert all(line.text for line in layout.lines)  # Transkribus carries the ground truth


@pytest.mark.parametrize("namespace", [PAGE_2019, PAGE_2019.replace("http://", "https://")], ids=["2019", "https"])
def test_page_2019_and_the_https_namespace_read_alike(transkribus: bytes, namespace: str) -> None:
    original = read_layout(transkribus)
    renamed = read_layout(transkribus.replace(PAGE_2013.encode(), namespace.encode()))
    assert renamed.version == "2019-07-15" and renamed.lines == original.lines


def test_the_reading_order_decides_the_line_order(transkribus: bytes) -> None:
    text = transkribus.decode()
    for old, new in (('index="0"', 'index="9"'), ('index="3"', 'index="0"')):  # the last region first, the first last
        text = text.replace(old, new, 1)
    lines = read_layout(text.encode()).lines
    assert lines[0].region_id == "TextRegion_1520586482298_193" and lines[-1].region_id == "region_1469098609000_462"


def alto(lines: list[LayoutLine], namespace: str = ALTO_4, polygons: bool = True, unit: str = "pixel") -> bytes:
    """An ALTO file with these lines in one block: a Shape/Polygon (or only the box) and words as Strings."""
    body = []
    for line in lines:
        left, top, right, bottom = line.box
        shape = f'<Shape><Polygon POINTS="{" ".join(f"{x},{y}" for x, y in line.polygon)}"/></Shape>' if polygons else ""
        words = "".join(f'<String CONTENT="{w}" WC="0.9"/><SP/>' for w in (line.text or "").split())
        baseline = " ".join(f"{x},{y}" for x, y in line.baseline)
        body.append(
            f'<TextLine ID="{line.line_id}" HPOS="{left}" VPOS="{top}" WIDTH="{right - left}" HEIGHT="{bottom - top}" '
            f'BASELINE="{baseline}">{shape}{words}</TextLine>'
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><alto xmlns="{namespace}"><Description><MeasurementUnit>{unit}</MeasurementUnit>'
        f"<sourceImageInformation><fileName>scan.jpg</fileName></sourceImageInformation></Description>"
        f'<Layout><Page ID="p1" WIDTH="2743" HEIGHT="3965"><PrintSpace><TextBlock ID="b1">{"".join(body)}</TextBlock>'
        f"</PrintSpace></Page></Layout></alto>"
    ).encode()


def test_alto_reads_polygons_boxes_baselines_and_words(transkribus: bytes) -> None:
    page = [line for line in read_layout(transkribus).lines if " " not in line.line_id][:10]
    with_polygons = read_layout(alto(page))
    assert (with_polygons.format, with_polygons.version, with_polygons.image) == ("alto", "v4", "scan.jpg")
    for mine, theirs in zip(with_polygons.lines, page, strict=True):
        assert (mine.line_id, mine.region_id, mine.polygon, mine.baseline) == (theirs.line_id, "b1", theirs.polygon, theirs.baseline)
        assert mine.text == " ".join(theirs.text.split())
    boxes = read_layout(alto(page, polygons=False))
    assert [line.box for line in boxes.lines] == [line.box for line in page]  # HPOS/VPOS/WIDTH/HEIGHT when no polygon
    old = read_layout(alto(page, namespace="http://www.loc.gov/standards/alto/ns-v2#").replace(b'BASELINE="', b'BASELINE="300" X="'))
    assert old.version == "v2" and old.lines[0].baseline == ((old.lines[0].box[0], 300), (old.lines[0].box[2] - 1, 300))


def test_bad_layouts_are_one_readable_error(transkribus: bytes) -> None:
    for data, says in (
        (b"<PcGts", "not well-formed XML"),
        (b"<html><body/></html>", "neither PAGE nor ALTO"),
        (b"<PcGts xmlns='" + PAGE_2013.encode() + b"'/>", "without a Page element"),
        (b" " * (MAX_LAYOUT_BYTES + 1), "more than a page's layout"),
        (alto([], unit="mm10"), "measurement unit 'mm10'"),
    ):
        with pytest.raises(UnreadableLayout, match=says):
            read_layout(data, "bad.xml")


def test_external_entities_and_dtds_are_never_resolved(tmp_path: Path, transkribus: bytes) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the contents of a local file")
    doctype = f'<!DOCTYPE PcGts [<!ENTITY leak SYSTEM "file://{secret}">]>'.encode()
    attack = transkribus.replace(b"?>\n", b"?>\n" + doctype + b"\n", 1).replace(b"$pag:39</Unicode>", b"&leak;</Unicode>", 1)
    layout = read_layout(attack)
    assert "contents of a local file" not in repr([line.text for line in layout.lines])
    assert len(layout.lines) == 44


def test_lines_without_ids_with_repeated_ids_or_without_geometry_are_recorded(transkribus: bytes) -> None:
    text = transkribus.decode()
    text = text.replace('id="line_1469098649515_464"', "", 1)  # the second line loses its id
    text = text.replace('id="line_1469098657875_466"', 'id="line_1469098653078_465"', 1)  # the fourth repeats the third's
    text = text.replace('<Coords points="790,224', '<Coords points="-50,224', 1)  # (the second line) starts left of the scan
    lines = read_layout(text.encode()).lines
    assert isinstance(lines[1].problem, NoLineId) and lines[1].line_id == "(no id: line 2)"
    assert lines[1].polygon[0] == (0, 224) and "clamped" in lines[1].notes[0]
    assert lines[2].problem is None and isinstance(lines[3].problem, DuplicateLineId)
    assert lines[3].line_id == "line_1469098653078_465 (repeat 2)"
    bare = text.replace('<Coords points="786,313 2432,322 2432,372 786,363"/>', "", 1).replace(
        '<Baseline points="786,358 2432,367"/>', "", 1
    )
    assert isinstance(read_layout(bare.encode()).lines[2].problem, NoGeometry)


@pytest.mark.parametrize("crop", ["polygon", "box"])
def test_a_box_around_a_pasted_line_gives_back_exactly_that_line(print_lines: Path, crop: str) -> None:
    paths = [p for p in sorted(print_lines.glob("*.png")) if Image.open(p).width < 2300][:8]
    canvas, placed = pasted_page(paths)
    for number, (path, (left, top)) in enumerate(placed):
        image = Image.open(path).convert("L")
        line = LayoutLine(f"l{number}", "r", number, polygon=rectangle(left, top, image.width, image.height))
        cut = crop_line(canvas, line, crop)
        assert cut.size == image.size and ImageChops.difference(cut, image).getbbox() is None, path.name


def test_polygon_crop_whitens_outside_the_polygon_and_keeps_inside(print_lines: Path) -> None:
    path = sorted(print_lines.glob("*.png"))[0]
    canvas, [(_, (left, top))] = pasted_page([path])
    image = Image.open(path).convert("L")
    triangle = ((left, top), (left + image.width - 1, top), (left, top + image.height - 1))
    polygon = crop_line(canvas, LayoutLine("t", None, 0, polygon=triangle), "polygon")
    box = crop_line(canvas, LayoutLine("t", None, 0, polygon=triangle), "box")
    width, height = image.size
    assert polygon.size == box.size == image.size
    assert polygon.getpixel((width - 2, height - 2)) == 255  # below the diagonal: outside, white
    assert box.getpixel((width - 2, height - 2)) == image.getpixel((width - 2, height - 2))  # the box keeps it
    assert polygon.getpixel((1, 1)) == image.getpixel((1, 1))  # inside: the scan's own pixel


def test_a_baseline_alone_gets_a_box_and_nothing_enclosed_is_no_geometry() -> None:
    scan = Image.new("L", (1000, 500), 255)
    cut = crop_line(scan, LayoutLine("b", None, 0, baseline=((100, 300), (600, 310))), baseline_height=60)
    assert cut.size == (501, 60 + 11 + 15)  # 60 above the highest point, a quarter below the lowest
    with pytest.raises(NoGeometry):
        crop_line(scan, LayoutLine("n", None, 0))
    with pytest.raises(NoGeometry):
        crop_line(scan, LayoutLine("o", None, 0, polygon=((2000, 900), (2100, 900), (2100, 950))))  # wholly outside the scan
