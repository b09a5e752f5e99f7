"""`export --format alto|page` of a page campaign: an ALTO 4 input keeps everything it holds and gets
the readings in its own TextLines; an ALTO 2 input is built afresh as ALTO 4.4; an ALTO input asked
for as PAGE becomes PAGE 2019; files as real tools write them (Transkribus's https namespaces, a
Metadata with only a Creator, eScriptorium's unlabelled tags) come out valid, the mends said. All
checked against the official schemas. Driven through ``write_back`` with records as the catalog
streams them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from pisar.layout import read_layout
from pisar.producer.export_pages import Export
from pisar.producer.export_writeback import write_back
from pisar.storage import LocalStorage
from tests.helpers.paths import SCHEMAS, TEST_DATA

ALTO_4 = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_2 = "http://www.loc.gov/standards/alto/ns-v2#"
PAGE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
TRANSKRIBUS = "170025120000003,0074"
ABOUT = {"model": "models/demo@sha256:abc", "campaign": "fond-12"}


def alto_page(namespace: str) -> bytes:
    """An ALTO file as OCR engines leave them: styles, tags, an illustration, old Strings with style
    references and word confidences, a Processing of its own, three lines with ids."""
    old_words = '<String ID="w1" CONTENT="old" WC="0.5" STYLEREFS="font0"/><SP/><String ID="w2" CONTENT="text" STYLEREFS="font0"/>'
    shape = '<Shape><Polygon POINTS="10,10 400,10 400,60 10,60"/></Shape>' if namespace == ALTO_4 else ""
    processing = (
        '<Processing ID="pisar"><processingSoftware><softwareName>kraken</softwareName></processingSoftware></Processing>'
        if namespace == ALTO_4
        else ""
    )
    tags = '<Tags><NamedEntityTag ID="tag1" LABEL="place"/></Tags>' if namespace == ALTO_4 else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><alto xmlns="{namespace}"><Description><MeasurementUnit>pixel</MeasurementUnit>'
        f"<sourceImageInformation><fileName>scan.png</fileName></sourceImageInformation>{processing}</Description>"
        f'<Styles><TextStyle ID="font0" FONTFAMILY="Times" FONTSIZE="10"/></Styles>{tags}'
        f'<Layout><Page ID="p1" WIDTH="1200" HEIGHT="900" PHYSICAL_IMG_NR="1"><PrintSpace HPOS="0" VPOS="0" WIDTH="1200" HEIGHT="900">'
        f'<Illustration ID="ill1" HPOS="600" VPOS="500" WIDTH="300" HEIGHT="200"/>'
        f'<TextBlock ID="b1" HPOS="10" VPOS="10" WIDTH="500" HEIGHT="300">'
        f'<TextLine ID="l1" HPOS="10" VPOS="10" WIDTH="390" HEIGHT="50" BASELINE="10,55 400,55">{shape}{old_words}</TextLine>'
        f'<TextLine ID="l2" HPOS="10" VPOS="100" WIDTH="390" HEIGHT="50">{old_words}</TextLine>'
        f'<TextLine ID="l3" HPOS="10" VPOS="200" WIDTH="390" HEIGHT="50">{old_words}</TextLine>'
        f"</TextBlock></PrintSpace></Page></Layout></alto>"
    ).encode()


def records(layout_key: str) -> list[dict]:
    """l1 and l2 read, l3 an error: as iter_records streams them, in key order."""
    return [
        {"key": f"{layout_key}#l1", "status": "ok", "text": "Въ лѣто  7427", "confidence": 0.91234},
        {"key": f"{layout_key}#l2", "status": "ok", "text": "строка", "confidence": None},
        {"key": f"{layout_key}#l3", "status": "error", "text": None, "confidence": None},
    ]


def write_one(tmp_path: Path, data: bytes, lines: list[dict], fmt: str, name: str = "p1.xml") -> tuple[Export, etree._Element]:
    """``data`` as the campaign's one layout file ``name``, exported as ``fmt``: the summary and the file written."""
    source = tmp_path / "source"
    source.mkdir()
    (source / name).write_bytes(data)
    result = write_back(lines, tmp_path / "out", ABOUT, LocalStorage(source), fmt)
    return result, etree.fromstring((tmp_path / "out" / name).read_bytes())


@pytest.fixture(scope="module")
def alto_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd")))


def strings(line: etree._Element) -> list[tuple[str, str | None]]:
    return [(s.get("CONTENT"), s.get("WC")) for s in line.iter(f"{{{ALTO_4}}}String")]


def test_an_alto_4_input_keeps_all_it_holds_and_gets_the_readings_in_its_lines(tmp_path: Path, alto_schema: etree.XMLSchema) -> None:
    source = tmp_path / "source"
    (source / "vol").mkdir(parents=True)
    (source / "vol" / "p1.xml").write_bytes(alto_page(ALTO_4))
    result = write_back(records("vol/p1.xml"), tmp_path / "out", ABOUT, LocalStorage(source), "alto")
    assert (result.files, result.records, result.error_lines) == (1, 2, 1)

    written = etree.fromstring((tmp_path / "out" / "vol" / "p1.xml").read_bytes())
    assert alto_schema.validate(written), alto_schema.error_log.last_error
    ns = {"a": ALTO_4}
    lines = {line.get("ID"): line for line in written.iterfind(".//a:TextLine", ns)}
    assert strings(lines["l1"]) == [("Въ", "0.9123"), ("лѣто", "0.9123"), ("7427", "0.9123")]
    assert strings(lines["l2"]) == [("строка", None)]  # no confidence, no WC
    assert strings(lines["l3"]) == [("old", "0.5"), ("text", None)]  # an error line is left as it was
    assert [etree.QName(child).localname for child in lines["l1"]] == ["Shape", "String", "SP", "String", "SP", "String"]
    assert lines["l1"].get("BASELINE") == "10,55 400,55" and lines["l1"].get("WIDTH") == "390"
    # What Pisar does not touch is all still there: styles, tags, the illustration, the block, the engine's own Processing.
    assert written.xpath("//a:TextStyle/@ID", namespaces=ns) == ["font0"]
    assert written.xpath("//a:NamedEntityTag/@LABEL", namespaces=ns) == ["place"]
    assert written.xpath("//a:Illustration/@ID", namespaces=ns) == ["ill1"]
    processing = written.xpath("//a:Description/a:Processing", namespaces=ns)
    assert [p.get("ID") for p in processing] == ["pisar", "pisar_processing1"]  # the file's own id is never reused
    assert processing[1].findtext("a:processingSoftware/a:softwareName", namespaces=ns) == "Pisar"
    assert "models/demo@sha256:abc" in processing[1].findtext("a:processingStepSettings", namespaces=ns)
    after = read_layout(etree.tostring(written))
    assert [(line.line_id, line.text) for line in after.lines] == [("l1", "Въ лѣто 7427"), ("l2", "строка"), ("l3", "old text")]


def test_an_alto_2_input_is_built_afresh_as_alto_4(tmp_path: Path, alto_schema: etree.XMLSchema) -> None:
    """ALTO 2's elements are not all 4.4's: the file is built from its layout, ids and geometry kept."""
    result, written = write_one(tmp_path, alto_page(ALTO_2), records("p1.xml"), "alto")
    assert (result.files, result.records) == (1, 2)
    assert etree.QName(written).namespace == ALTO_4 and alto_schema.validate(written), alto_schema.error_log.last_error
    before, after = read_layout(alto_page(ALTO_2)), read_layout(etree.tostring(written))
    assert [(line.line_id, line.box) for line in after.lines] == [(line.line_id, line.box) for line in before.lines]
    assert [line.text for line in after.lines] == ["Въ лѣто 7427", "строка", "old text"]  # the error line keeps its place and its text


def test_a_broken_input_is_left_out_and_said(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "p1.xml").write_bytes(b"<alto")
    result = write_back(records("p1.xml"), tmp_path / "out", ABOUT, LocalStorage(source), "alto")
    assert result.files == 0 and "1 layout files left out (p1.xml:" in (result.replaced or "")


def test_words_carry_their_own_confidence_and_an_empty_reading_the_lines(tmp_path: Path, alto_schema: etree.XMLSchema) -> None:
    """WC per word from the stored word confidences; an empty reading is one empty String with the
    line's confidence (the end token's probability); without stored ones, the line's on every word."""
    lines = [
        {"key": "p1.xml#l1", "status": "ok", "text": "Въ лѣто", "confidence": 0.8, "word_confidences": [0.95, 0.6731]},
        {"key": "p1.xml#l2", "status": "ok", "text": "", "confidence": 0.97, "word_confidences": []},
        {"key": "p1.xml#l3", "status": "ok", "text": "два слова", "confidence": 0.7, "word_confidences": None},
    ]
    _, written = write_one(tmp_path, alto_page(ALTO_4), lines, "alto")
    assert alto_schema.validate(written), alto_schema.error_log.last_error
    found = {line.get("ID"): strings(line) for line in written.iterfind(".//a:TextLine", {"a": ALTO_4})}
    assert found == {"l1": [("Въ", "0.9500"), ("лѣто", "0.6731")], "l2": [("", "0.9700")], "l3": [("два", "0.7000"), ("слова", "0.7000")]}


@pytest.fixture(scope="module")
def page_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "pagecontent-2019-07-15.xsd")))


def transkribus_records(layout_key: str) -> list[dict]:
    """The Transkribus page's first three lines read, as the catalog streams them."""
    layout = read_layout((TEST_DATA / "pages" / f"{TRANSKRIBUS}.xml").read_bytes())
    return [
        {"key": f"{layout_key}#{line.line_id}", "status": "ok", "text": f"строка {n}", "confidence": 0.9, "word_confidences": [0.8, 0.95]}
        for n, line in enumerate(layout.lines[:3])
    ]


@pytest.mark.parametrize(
    ("change", "mended"),
    [
        (lambda xml: xml.replace(b"http://", b"https://"), "XML Schema instance namespace https:// made http://"),
        (lambda xml: re.sub(rb"<Created>.*?</LastChange>", b"", xml, flags=re.S), "Metadata given its Created"),
    ],
    ids=["transkribus-https-namespaces", "metadata-only-creator"],
)
def test_page_files_as_tools_write_them_come_out_valid(change, mended: str, tmp_path: Path, page_schema: etree.XMLSchema) -> None:
    original = (TEST_DATA / "pages" / f"{TRANSKRIBUS}.xml").read_bytes()
    assert change(original) != original
    result, written = write_one(tmp_path, change(original), transkribus_records("p.xml"), "page", "p.xml")
    assert page_schema.validate(written), page_schema.error_log.last_error
    assert f"1 files repaired to be valid (p.xml: {mended}" in result.describe("out"), result.describe("out")
    assert "still not valid" not in result.describe("out")
    metadata = {etree.QName(child).localname: child.text for child in written.find(f"{{{PAGE}}}Metadata")}
    assert metadata["LastChange"] >= "2026" and metadata["Created"]  # this rewrite changed it now
    assert [line.text for line in read_layout(etree.tostring(written)).lines[:3]] == ["строка 0", "строка 1", "строка 2"]


def test_an_escriptorium_alto_with_unlabelled_tags_comes_out_valid(tmp_path: Path, alto_schema: etree.XMLSchema) -> None:
    tagged = alto_page(ALTO_4).replace(
        b'<Tags><NamedEntityTag ID="tag1" LABEL="place"/></Tags>',
        b'<Tags><OtherTag ID="BT1" DESCRIPTION="block type Main"/><OtherTag ID="LT1" TYPE="line type"/></Tags>',
    )
    result, written = write_one(tmp_path, tagged, records("p1.xml"), "alto")
    assert alto_schema.validate(written), alto_schema.error_log.last_error
    labels = {tag.get("ID"): tag.get("LABEL") for tag in written.iter(f"{{{ALTO_4}}}OtherTag")}
    assert labels == {"BT1": "block type Main", "LT1": "line type"}  # what each tag said of itself
    assert "p1.xml: 2 tags given the LABEL ALTO requires" in (result.replaced or "")


@pytest.mark.parametrize("namespace", [ALTO_4, ALTO_2])
def test_an_alto_input_asked_for_as_page_becomes_page_2019(namespace: str, tmp_path: Path, page_schema: etree.XMLSchema) -> None:
    """Every layout format in gives every layout format out: regions, ids, geometry and reading order
    carried over, each read line's words and text, the error line its old text."""
    result, written = write_one(tmp_path, alto_page(namespace), records("p1.xml"), "page")
    assert (result.files, result.records) == (1, 2)
    assert etree.QName(written).namespace == PAGE and page_schema.validate(written), page_schema.error_log.last_error
    before, after = read_layout(alto_page(namespace)), read_layout(etree.tostring(written))
    assert after.format == "page" and (after.image, after.width, after.height) == ("scan.png", 1200, 900)
    assert [(line.line_id, line.region_id, line.polygon, line.baseline) for line in after.lines] == [
        (line.line_id, line.region_id, line.polygon, line.baseline) for line in before.lines
    ]
    assert [line.text for line in after.lines] == ["Въ лѣто  7427", "строка", "old text"]  # the reading as read, spaces too
    words = [w.findtext(f"{{{PAGE}}}TextEquiv/{{{PAGE}}}Unicode") for w in written.iter(f"{{{PAGE}}}Word")]
    assert words == ["Въ", "лѣто", "7427", "строка"]
    assert "repaired" not in (result.replaced or "")
