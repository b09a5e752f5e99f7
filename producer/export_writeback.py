"""A page campaign's text written back beside its own layout: `pisar export NAME --format page|alto -o DIR`.

Each input PAGE file (2013-07-15, 2019-07-15 or the ``https://`` namespace) is read again from the
campaign's source and written to ``DIR/<its key>`` as PAGE 2019-07-15, with everything Pisar does
not read kept as it was: regions, line ids, ``Coords``, ``Baseline``, the reading order, custom
attributes, other elements. Only this changes:

- each TextLine Pisar read gets one ``TextEquiv`` with ``conf`` (the line's confidence) holding the
  reading, and before it one ``Word`` per word with its own ``TextEquiv@conf`` (the word's
  confidence) and the line's ``Coords`` (Pisar does not align words with the scan; the metadata
  says so); the line's earlier ``TextEquiv`` and ``Word`` elements (often the ground truth, or an
  older recognition) are removed, since they no longer describe its text; a line whose reading is an
  error is left as it was and counted;
- a region that had a ``TextEquiv`` gets its lines' readings joined by line breaks;
- ``Metadata`` gets ``LastChange`` now and a ``MetadataItem`` (processingStep) naming Pisar, the
  model and its revision, and the confidence formula.

The 2013 schema's elements are all in 2019's, so moving a file to the 2019 namespace keeps it valid
(``tests/test_page_campaign.py`` validates the output with the official XSD). The parser resolves no
entities, loads no DTD and reaches no network, as when the file was listed. Characters XML 1.0 cannot
hold become U+FFFD (``XmlScrubber``), as in every XML export. An ALTO input asked for as PAGE is
left out and counted.

``--format alto`` writes ALTO 4.4. An ALTO 4 input is rewritten in place (``_rewritten_alto``):
everything it holds is kept (styles, tags, blocks, illustrations, ``Shape``s, attributes), each
TextLine Pisar read gets its words as new ``String``s in place of its old ``String``/``SP``/``HYP``,
and ``Description`` gets one more ``Processing`` naming Pisar and the model. Any other input (PAGE,
ALTO 2 or 3, whose elements differ from 4.4's) is built afresh from its layout (``_as_alto``):
regions, line ids and geometry kept, the words as ``String``s.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import Any

from lxml import etree

from pisar.constants import CONFIDENCE_FORMULA
from pisar.errors import DuplicateLineId, LineError, NoLineId
from pisar.layout import read_layout, split_line_key
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_pages import ALTO_NS, ALTO_SCHEMA, PAGE_NS, XSI, Export, now_utc, safe_segment
from pisar.storage import Storage
from pisar.words import confident_words
from pisar.xml_text import XmlScrubber

_ID_PROBLEMS = (NoLineId, DuplicateLineId)  # such a line's catalog id is a stand-in, not the file's
_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*")  # what an xsd:ID may be (ASCII subset): anything else gets a made id
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False)
# TextLine children after TextEquiv in the schema's sequence: a new TextEquiv goes before the first of them.
_AFTER_TEXT_EQUIV = ("TextStyle", "UserDefined", "Labels")
WORD_NOTE = "word confidence per word (the line's where none was stored); word positions not aligned (PAGE Word Coords are the line's)"


def write_back(records: Iterable[dict[str, Any]], root: Path, about: dict[str, str], storage: Storage, fmt: str = "page") -> Export:
    """One file per input layout under ``root``, at the input's own relative path: the PAGE input
    rewritten (``fmt="page"``), or an ALTO 4.4 file built from its layout (``fmt="alto"``)."""
    scrub = XmlScrubber()
    result = Export()
    root.mkdir(parents=True, exist_ok=True)
    left_out: list[str] = []
    for layout_key, group in groupby(records, key=lambda record: split_line_key(record["key"])[0]):
        lines = list(group)
        readings = {split_line_key(r["key"])[1]: r for r in lines if r["status"] == "ok"}
        result.error_lines += len(lines) - len(readings)
        try:
            source = storage.read(layout_key)
            data = _writer(fmt, source)(source, layout_key, readings, about, scrub)
        except (LineError, _NotPage) as exc:
            left_out.append(f"{layout_key}: {exc}")
            continue
        with atomic_output(_target(root, layout_key), binary=True) as handle:
            handle.write(data)
        result.files += 1
        result.records += len(readings)
    notes = [note for note in (scrub.describe(), _left_out(left_out)) if note]
    result.replaced = "; ".join(notes) or None
    return result


class _NotPage(Exception):
    """An ALTO input asked for as PAGE (not built yet: ``--format alto`` writes it)."""


def _writer(fmt: str, data: bytes):  # -> the function that writes this input as ``fmt``
    """PAGE rewrites PAGE; ALTO rewrites an ALTO 4 file and builds any other afresh. The root's
    namespace decides; a file that does not even start as XML goes to ``_as_alto``, whose
    ``read_layout`` says what is wrong with it as a recorded ``LineError``."""
    if fmt == "page":
        return _rewritten
    try:
        _, root = next(etree.iterparse(io.BytesIO(data), events=("start",), resolve_entities=False, no_network=True, load_dtd=False))
    except (etree.XMLSyntaxError, StopIteration):
        return _as_alto
    return _rewritten_alto if etree.QName(root).namespace == ALTO_NS else _as_alto


def _rewritten_alto(data: bytes, layout_key: str, readings: dict[str, dict[str, Any]], about: dict[str, str], scrub: XmlScrubber) -> bytes:
    """An ALTO 4 input with each read TextLine's words replaced and a ``Processing`` added; the rest as it was.

    A line is matched by its ``ID``; one without a usable ID (its catalog key is a stand-in) is left as
    it was, as is a line whose reading is an error.
    """
    read_layout(data, layout_key)  # the same checks as the listing: size, entities, format
    root = etree.fromstring(data, _PARSER)
    ns = etree.QName(root).namespace
    for line in root.iter(f"{{{ns}}}TextLine"):
        reading = readings.get(line.get("ID") or "")
        if reading is None:
            continue
        for old in [child for child in line if etree.QName(child).localname in ("String", "SP", "HYP")]:
            line.remove(old)
        _append_words(line, ns, reading, scrub)
    description = root.find(f"{{{ns}}}Description")
    if description is None:
        description = etree.Element(f"{{{ns}}}Description")
        root.insert(0, description)
    _append_processing(description, ns, _Ids(root.xpath("//@ID")).take("pisar", "processing"), about, scrub)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _append_processing(description: etree._Element, ns: str, element_id: str, about: dict[str, str], scrub: XmlScrubber) -> None:
    """ALTO's record of this run: when, with which model and campaign, by which Pisar."""
    from pisar import __version__

    processing = etree.SubElement(description, f"{{{ns}}}Processing", ID=element_id)
    etree.SubElement(processing, f"{{{ns}}}processingDateTime").text = now_utc()
    settings = f"model {about.get('model', '?')}; campaign {about.get('campaign', '?')}; confidence {CONFIDENCE_FORMULA}; {WORD_NOTE}"
    etree.SubElement(processing, f"{{{ns}}}processingStepSettings").text = scrub(settings)
    software = etree.SubElement(processing, f"{{{ns}}}processingSoftware")
    etree.SubElement(software, f"{{{ns}}}softwareName").text = "Pisar"
    etree.SubElement(software, f"{{{ns}}}softwareVersion").text = __version__


def _append_words(line: etree._Element, ns: str, reading: dict[str, Any] | None, scrub: XmlScrubber) -> None:
    """The reading's words as ``String``s, each with its own ``WC`` (``pisar.words.confident_words``),
    with an ``SP`` between them; an empty ``String`` where there are no words, since ALTO wants one in
    every TextLine (an empty reading's carries the line's confidence: how sure the model was)."""
    found = [] if reading is None else reading_words(reading, scrub)
    for index, (word, confidence) in enumerate(found or [("", None if reading is None else reading["confidence"])]):
        if index:
            etree.SubElement(line, f"{{{ns}}}SP")
        etree.SubElement(line, f"{{{ns}}}String", CONTENT=word, **({} if confidence is None else {"WC": f"{confidence:.4f}"}))


def reading_words(reading: dict[str, Any], scrub: XmlScrubber) -> list[tuple[str, float | None]]:
    """An export record's words, as XML can hold them, each with its confidence."""
    return confident_words(scrub(reading["text"] or ""), reading.get("word_confidences"), reading["confidence"])


def _as_alto(data: bytes, layout_key: str, readings: dict[str, dict[str, Any]], about: dict[str, str], scrub: XmlScrubber) -> bytes:
    """ALTO 4.4 from the file's layout: its regions as TextBlocks and its TextLines with their ids,
    boxes, polygons (``Shape``) and baselines, in reading order, each with its words (``_append_words``).
    A line without a reading keeps its geometry and an empty ``String``; a line without a usable id gets one."""
    layout = read_layout(data, layout_key)
    alto = etree.Element(f"{{{ALTO_NS}}}alto", nsmap={None: ALTO_NS, "xsi": XSI})
    alto.set(f"{{{XSI}}}schemaLocation", f"{ALTO_NS} {ALTO_SCHEMA}")
    description = etree.SubElement(alto, f"{{{ALTO_NS}}}Description")
    etree.SubElement(description, f"{{{ALTO_NS}}}MeasurementUnit").text = "pixel"
    source = etree.SubElement(description, f"{{{ALTO_NS}}}sourceImageInformation")
    etree.SubElement(source, f"{{{ALTO_NS}}}fileName").text = scrub(layout.image)
    _append_processing(description, ALTO_NS, "pisar", about, scrub)
    boxes = [line.box for line in layout.lines if line.box]
    width = layout.width or max((b[2] for b in boxes), default=1)
    height = layout.height or max((b[3] for b in boxes), default=1)
    page = etree.SubElement(etree.SubElement(alto, f"{{{ALTO_NS}}}Layout"), f"{{{ALTO_NS}}}Page", ID="page1", PHYSICAL_IMG_NR="1")
    page.set("WIDTH", str(width))
    page.set("HEIGHT", str(height))
    space = etree.SubElement(page, f"{{{ALTO_NS}}}PrintSpace", HPOS="0", VPOS="0", WIDTH=str(width), HEIGHT=str(height))
    ids = _Ids()
    for region_id, group in groupby(layout.lines, key=lambda line: line.region_id):
        lines = list(group)
        block = etree.SubElement(space, f"{{{ALTO_NS}}}TextBlock", ID=ids.take(region_id, "block"))
        _place(block, _union([line.box for line in lines if line.box]))
        for line in lines:
            element = etree.SubElement(
                block, f"{{{ALTO_NS}}}TextLine", ID=ids.take(None if isinstance(line.problem, _ID_PROBLEMS) else line.line_id, "line")
            )
            _place(element, line.box)
            if line.baseline:
                element.set("BASELINE", " ".join(f"{x},{y}" for x, y in line.baseline))
            if len(line.polygon) >= 3:
                shape = etree.SubElement(element, f"{{{ALTO_NS}}}Shape")
                etree.SubElement(shape, f"{{{ALTO_NS}}}Polygon", POINTS=" ".join(f"{x},{y}" for x, y in line.polygon))
            _append_words(element, ALTO_NS, readings.get(line.line_id), scrub)
    etree.indent(alto, space=" ")
    return etree.tostring(alto, xml_declaration=True, encoding="UTF-8")


class _Ids:
    """XML ids for ALTO: the file's own where it is a usable, unused one; ``block3``/``line7`` otherwise."""

    def __init__(self, used: Iterable[str] = ()) -> None:
        self.used: set[str] = set(used)  # ids the file already holds, where it is kept
        self.count = 0

    def take(self, wanted: str | None, kind: str) -> str:
        if wanted and _NCNAME.fullmatch(wanted) and wanted not in self.used:
            self.used.add(wanted)
            return wanted
        while True:
            self.count += 1
            made = f"pisar_{kind}{self.count}"
            if made not in self.used:
                self.used.add(made)
                return made


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _place(element: etree._Element, box: tuple[int, int, int, int] | None) -> None:
    """HPOS/VPOS/WIDTH/HEIGHT from a (left, top, right, bottom) box, right and bottom exclusive."""
    if box is not None:
        left, top, right, bottom = box
        for name, value in (("HPOS", left), ("VPOS", top), ("WIDTH", right - left), ("HEIGHT", bottom - top)):
            element.set(name, str(value))


def _rewritten(data: bytes, layout_key: str, readings: dict[str, dict[str, Any]], about: dict[str, str], scrub: XmlScrubber) -> bytes:
    layout = read_layout(data, layout_key)  # the same checks as the listing: size, entities, format
    if layout.format != "page":
        raise _NotPage("an ALTO file: --format alto writes it")
    document = etree.fromstring(data, _PARSER)
    old = etree.QName(document).namespace
    if old != PAGE_NS:  # 2013 or the https variant: every 2013 element is a 2019 one
        document = etree.fromstring(data.replace(old.encode(), PAGE_NS.encode()), _PARSER)
    ns = f"{{{PAGE_NS}}}"
    page = document.find(f"{ns}Page")
    ids = _Ids(document.xpath("//@id"))
    for line in page.iter(f"{ns}TextLine"):
        reading = readings.get(line.get("id") or "")
        if reading is None:
            continue
        for stale in line.findall(f"{ns}TextEquiv") + line.findall(f"{ns}Word"):
            line.remove(stale)
        equiv = _insert_text_equiv(line, ns, scrub(reading["text"] or ""), reading["confidence"])
        _insert_words(line, equiv, ns, reading_words(reading, scrub), ids)
    for region in page.iter(f"{ns}TextRegion"):
        if region.find(f"{ns}TextEquiv") is not None:
            texts = [_line_text(line, ns) for line in region.findall(f"{ns}TextLine")]
            unicode = region.find(f"{ns}TextEquiv/{ns}Unicode")
            if unicode is not None:
                unicode.text = "\n".join(text for text in texts if text is not None)
    _stamp(document.find(f"{ns}Metadata"), ns, about, scrub)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", standalone=True)


def _insert_text_equiv(line: etree._Element, ns: str, text: str, confidence: float | None) -> etree._Element:
    equiv = _text_equiv(ns, text, confidence)
    equiv.tail = line[-1].tail if len(line) else None
    for index, child in enumerate(line):
        if etree.QName(child).localname in _AFTER_TEXT_EQUIV:
            line.insert(index, equiv)
            return equiv
    line.append(equiv)
    return equiv


def _text_equiv(ns: str, text: str, confidence: float | None) -> etree._Element:
    equiv = etree.Element(f"{ns}TextEquiv", {} if confidence is None else {"conf": f"{confidence:.4f}"})
    etree.SubElement(equiv, f"{ns}Unicode").text = text
    return equiv


def _insert_words(line: etree._Element, equiv: etree._Element, ns: str, found: list[tuple[str, float | None]], ids: _Ids) -> None:
    """One ``Word`` per word before the line's ``TextEquiv`` (the schema's order), each with its own
    ``TextEquiv@conf``. Pisar does not align words with the scan, so each Word's ``Coords`` are the
    line's (the file's metadata says so); a line without ``Coords`` gets no Words, as a Word must have them."""
    coords = line.find(f"{ns}Coords")
    if coords is None or not coords.get("points"):
        return
    for number, (word, confidence) in enumerate(found, start=1):
        element = etree.Element(f"{ns}Word", id=ids.take(f"{line.get('id')}_w{number}", "word"))
        etree.SubElement(element, f"{ns}Coords", points=coords.get("points"))
        element.append(_text_equiv(ns, word, confidence))
        element.tail = equiv.tail
        equiv.addprevious(element)


def _line_text(line: etree._Element, ns: str) -> str | None:
    unicode = line.find(f"{ns}TextEquiv/{ns}Unicode")
    return None if unicode is None else unicode.text or ""


def _stamp(metadata: etree._Element | None, ns: str, about: dict[str, str], scrub: XmlScrubber) -> None:
    """``LastChange`` now and a processing step naming Pisar, the model and the confidence formula."""
    from pisar import __version__

    if metadata is None:
        return
    last = metadata.find(f"{ns}LastChange")
    if last is not None:
        last.text = now_utc()
    value = (
        f"Pisar {__version__}; model {about.get('model', '?')}; campaign {about.get('campaign', '?')}; confidence {CONFIDENCE_FORMULA}"
        f"; {WORD_NOTE}"
    )
    etree.SubElement(metadata, f"{ns}MetadataItem", type="processingStep", name="text recognition", value=scrub(value), date=now_utc())


def _target(root: Path, layout_key: str) -> Path:
    """The output file: the input's key under ``root``, each segment made safe (a key never writes outside it)."""
    return root.joinpath(*(safe_segment(segment) for segment in PurePosixPath(layout_key).parts))


def _left_out(notes: list[str]) -> str | None:
    if not notes:
        return None
    shown = "; ".join(notes[:3]) + (f"; and {len(notes) - 3} more" if len(notes) > 3 else "")
    return f"{len(notes)} layout files left out ({shown})"
