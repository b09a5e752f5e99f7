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
- ``Metadata`` gets ``LastChange`` now (and ``Created`` if it had none) and a ``MetadataItem``
  (processingStep) naming Pisar, the model and its revision, and the confidence formula.

The 2013 schema's elements are all in 2019's, so moving a file to the 2019 namespace keeps it valid
(``tests/test_page_campaign.py`` validates the output with the official XSD). The parser resolves no
entities, loads no DTD and reaches no network, as when the file was listed. Characters XML 1.0 cannot
hold become U+FFFD (``XmlScrubber``), as in every XML export.

``--format alto`` writes ALTO 4.4. An ALTO 4 input is rewritten in place (``_rewritten_alto``):
everything it holds is kept (styles, tags, blocks, illustrations, ``Shape``s, attributes), each
TextLine Pisar read gets its words as new ``String``s in place of its old ``String``/``SP``/``HYP``,
and ``Description`` gets one more ``Processing`` naming Pisar and the model. Any other input is
built afresh from its layout (``producer/layout_fresh.py``): PAGE or ALTO 2/3 asked for as ALTO,
and ALTO asked for as PAGE, so every layout format in gives every layout format out.

Files as tools write them are not always valid; the defects known from real archives are mended on
the way (``producer/layout_repairs.py``), each written file is checked against the official schema,
and the export's summary says what was mended and what is still not valid.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import Any

from lxml import etree

from pisar.errors import LineError
from pisar.layout import read_layout, split_line_key
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_pages import ALTO_NS, PAGE_NS, Export, safe_segment
from pisar.producer.layout_fresh import as_alto, as_page
from pisar.producer.layout_parts import (
    Ids,
    append_alto_processing,
    append_alto_words,
    page_processing_item,
    page_text_equiv,
    page_words,
    reading_words,
)
from pisar.producer.layout_repairs import Repairs, mend_alto, mend_page, mend_source
from pisar.storage import Storage
from pisar.xml_text import XmlScrubber

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False)
# TextLine children after TextEquiv in the schema's sequence: a new TextEquiv goes before the first of them.
_AFTER_TEXT_EQUIV = ("TextStyle", "UserDefined", "Labels")
Readings = dict[str, dict[str, Any]]
Writer = Callable[[bytes, str, Readings, dict[str, str], XmlScrubber, Repairs], etree._Element]


def write_back(
    records: Iterable[dict[str, Any]],
    root: Path,
    about: dict[str, str],
    storage: Storage,
    fmt: str = "page",
    name_of: Callable[[str], str] | None = None,
) -> Export:
    """One file per input layout under ``root``, at the input's own relative path (``name_of`` the
    layout's key: a detected scan's layout is named after the scan), as ``fmt`` (``page`` or
    ``alto``): the input rewritten where it is of that format, built afresh from its layout otherwise."""
    scrub = XmlScrubber()
    repairs = Repairs()
    result = Export()
    root.mkdir(parents=True, exist_ok=True)
    left_out: list[str] = []
    for layout_key, group in groupby(records, key=lambda record: split_line_key(record["key"])[0]):
        lines = list(group)
        readings = {split_line_key(r["key"])[1]: r for r in lines if r["status"] == "ok"}
        result.error_lines += len(lines) - len(readings)
        try:
            source = mend_source(storage.read(layout_key), layout_key, repairs)
            document = _writer(fmt, source)(source, layout_key, readings, about, scrub, repairs)
        except LineError as exc:
            left_out.append(f"{layout_key}: {exc}")
            continue
        repairs.check(layout_key, document, fmt)
        with atomic_output(_target(root, name_of(layout_key) if name_of else layout_key), binary=True) as handle:
            handle.write(etree.tostring(document, xml_declaration=True, encoding="UTF-8", standalone=True if fmt == "page" else None))
        result.files += 1
        result.records += len(readings)
    notes = [note for note in (scrub.describe(), repairs.describe(), _left_out(left_out)) if note]
    result.replaced = "; ".join(notes) or None
    return result


def _writer(fmt: str, data: bytes) -> Writer:
    """What writes this input as ``fmt``: a rewrite of a PAGE input as PAGE and of an ALTO 4 input as
    ALTO; a file built afresh from the layout for the rest. The root's namespace decides; a file
    that does not even start as XML goes to a builder, whose ``read_layout`` says what is wrong
    with it as a recorded ``LineError``."""
    try:
        _, root = next(etree.iterparse(io.BytesIO(data), events=("start",), resolve_entities=False, no_network=True, load_dtd=False))
        namespace = etree.QName(root).namespace or ""
    except (etree.XMLSyntaxError, StopIteration):
        namespace = ""
    if fmt == "page":
        return _rewritten if "primaresearch.org/PAGE/" in namespace else _fresh_page
    return _rewritten_alto if namespace == ALTO_NS else _fresh_alto


def _fresh_alto(data: bytes, layout_key: str, readings: Readings, about: dict[str, str], scrub: XmlScrubber, _: Repairs) -> etree._Element:
    return as_alto(read_layout(data, layout_key), readings, about, scrub)


def _fresh_page(data: bytes, layout_key: str, readings: Readings, about: dict[str, str], scrub: XmlScrubber, _: Repairs) -> etree._Element:
    return as_page(read_layout(data, layout_key), readings, about, scrub)


def _rewritten_alto(
    data: bytes, layout_key: str, readings: Readings, about: dict[str, str], scrub: XmlScrubber, repairs: Repairs
) -> etree._Element:
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
        append_alto_words(line, ns, reading, scrub)
    description = root.find(f"{{{ns}}}Description")
    if description is None:
        description = etree.Element(f"{{{ns}}}Description")
        root.insert(0, description)
    append_alto_processing(description, ns, Ids(root.xpath("//@ID")).take("pisar", "processing"), about, scrub)
    mend_alto(root, layout_key, repairs)
    return root


def _rewritten(
    data: bytes, layout_key: str, readings: Readings, about: dict[str, str], scrub: XmlScrubber, repairs: Repairs
) -> etree._Element:
    """A PAGE input as PAGE 2019 with each read TextLine's text, words and confidence (the module docstring)."""
    read_layout(data, layout_key)  # the same checks as the listing: size, entities, format
    document = etree.fromstring(data, _PARSER)
    old = etree.QName(document).namespace
    if old != PAGE_NS:  # 2013 or the https variant: every 2013 element is a 2019 one
        document = etree.fromstring(data.replace(old.encode(), PAGE_NS.encode()), _PARSER)
    ns = f"{{{PAGE_NS}}}"
    page = document.find(f"{ns}Page")
    ids = Ids(document.xpath("//@id"))
    for line in page.iter(f"{ns}TextLine"):
        reading = readings.get(line.get("id") or "")
        if reading is None:
            continue
        for stale in line.findall(f"{ns}TextEquiv") + line.findall(f"{ns}Word"):
            line.remove(stale)
        equiv = _insert_text_equiv(line, ns, scrub(reading["text"] or ""), reading["confidence"])
        coords = line.find(f"{ns}Coords")
        for word in page_words(line, ns, reading_words(reading, scrub), ids, None if coords is None else coords.get("points")):
            word.tail = equiv.tail
            equiv.addprevious(word)
    for region in page.iter(f"{ns}TextRegion"):
        if region.find(f"{ns}TextEquiv") is not None:
            texts = [_line_text(line, ns) for line in region.findall(f"{ns}TextLine")]
            unicode = region.find(f"{ns}TextEquiv/{ns}Unicode")
            if unicode is not None:
                unicode.text = "\n".join(text for text in texts if text is not None)
    mend_page(document, layout_key, repairs)  # the schema's Metadata, LastChange now
    document.find(f"{ns}Metadata").append(page_processing_item(ns, about, scrub))
    return document


def _insert_text_equiv(line: etree._Element, ns: str, text: str, confidence: float | None) -> etree._Element:
    equiv = page_text_equiv(ns, text, confidence)
    equiv.tail = line[-1].tail if len(line) else None
    for index, child in enumerate(line):
        if etree.QName(child).localname in _AFTER_TEXT_EQUIV:
            line.insert(index, equiv)
            return equiv
    line.append(equiv)
    return equiv


def _line_text(line: etree._Element, ns: str) -> str | None:
    unicode = line.find(f"{ns}TextEquiv/{ns}Unicode")
    return None if unicode is None else unicode.text or ""


def _target(root: Path, layout_key: str) -> Path:
    """The output file: the input's key under ``root``, each segment made safe (a key never writes outside it)."""
    return root.joinpath(*(safe_segment(segment) for segment in PurePosixPath(layout_key).parts))


def _left_out(notes: list[str]) -> str | None:
    if not notes:
        return None
    shown = "; ".join(notes[:3]) + (f"; and {len(notes) - 3} more" if len(notes) > 3 else "")
    return f"{len(notes)} layout files left out ({shown})"
