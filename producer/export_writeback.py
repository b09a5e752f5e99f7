"""A page campaign's text written back into its own PAGE files: `pisar export NAME --format page -o DIR`.

Each input PAGE file (2013-07-15, 2019-07-15 or the ``https://`` namespace) is read again from the
campaign's source and written to ``DIR/<its key>`` as PAGE 2019-07-15, with everything Pisar does
not read kept as it was: regions, line ids, ``Coords``, ``Baseline``, the reading order, custom
attributes, other elements. Only this changes:

- each TextLine Pisar read gets one ``TextEquiv`` with ``conf`` (the line's confidence) holding the
  reading; the line's earlier ``TextEquiv`` and ``Word`` elements (often the ground truth, or an
  older recognition) are removed, since they no longer describe its text; a line whose reading is an
  error is left as it was and counted;
- a region that had a ``TextEquiv`` gets its lines' readings joined by line breaks;
- ``Metadata`` gets ``LastChange`` now and a ``MetadataItem`` (processingStep) naming Pisar, the
  model and its revision, and the confidence formula.

The 2013 schema's elements are all in 2019's, so moving a file to the 2019 namespace keeps it valid
(``tests/test_page_campaign.py`` validates the output with the official XSD). The parser resolves no
entities, loads no DTD and reaches no network, as when the file was listed. Characters XML 1.0 cannot
hold become U+FFFD (``XmlScrubber``), as in every XML export. ALTO inputs are not rewritten yet: they
are counted and left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import Any

from lxml import etree

from pisar.constants import CONFIDENCE_FORMULA
from pisar.errors import LineError
from pisar.layout import read_layout, split_line_key
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_pages import PAGE_NS, Export, now_utc, safe_segment
from pisar.storage import Storage
from pisar.xml_text import XmlScrubber

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False)
# TextLine children after TextEquiv in the schema's sequence: a new TextEquiv goes before the first of them.
_AFTER_TEXT_EQUIV = ("TextStyle", "UserDefined", "Labels")


def write_back(records: Iterable[dict[str, Any]], root: Path, about: dict[str, str], storage: Storage) -> Export:
    """One PAGE 2019 file per input layout under ``root``, at the input's own relative path."""
    scrub = XmlScrubber()
    result = Export()
    root.mkdir(parents=True, exist_ok=True)
    left_out: list[str] = []
    for layout_key, group in groupby(records, key=lambda record: split_line_key(record["key"])[0]):
        lines = list(group)
        readings = {split_line_key(r["key"])[1]: r for r in lines if r["status"] == "ok"}
        result.error_lines += len(lines) - len(readings)
        try:
            data = _rewritten(storage.read(layout_key), layout_key, readings, about, scrub)
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
    """An ALTO input (its write-back is not built yet)."""


def _rewritten(data: bytes, layout_key: str, readings: dict[str, dict[str, Any]], about: dict[str, str], scrub: XmlScrubber) -> bytes:
    layout = read_layout(data, layout_key)  # the same checks as the listing: size, entities, format
    if layout.format != "page":
        raise _NotPage("ALTO is not written back yet")
    document = etree.fromstring(data, _PARSER)
    old = etree.QName(document).namespace
    if old != PAGE_NS:  # 2013 or the https variant: every 2013 element is a 2019 one
        document = etree.fromstring(data.replace(old.encode(), PAGE_NS.encode()), _PARSER)
    ns = f"{{{PAGE_NS}}}"
    page = document.find(f"{ns}Page")
    for line in page.iter(f"{ns}TextLine"):
        reading = readings.get(line.get("id") or "")
        if reading is None:
            continue
        for stale in line.findall(f"{ns}TextEquiv") + line.findall(f"{ns}Word"):
            line.remove(stale)
        _insert_text_equiv(line, ns, scrub(reading["text"] or ""), reading["confidence"])
    for region in page.iter(f"{ns}TextRegion"):
        if region.find(f"{ns}TextEquiv") is not None:
            texts = [_line_text(line, ns) for line in region.findall(f"{ns}TextLine")]
            unicode = region.find(f"{ns}TextEquiv/{ns}Unicode")
            if unicode is not None:
                unicode.text = "\n".join(text for text in texts if text is not None)
    _stamp(document.find(f"{ns}Metadata"), ns, about, scrub)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", standalone=True)


def _insert_text_equiv(line: etree._Element, ns: str, text: str, confidence: float | None) -> None:
    equiv = etree.Element(f"{ns}TextEquiv", {} if confidence is None else {"conf": f"{confidence:.4f}"})
    etree.SubElement(equiv, f"{ns}Unicode").text = text
    equiv.tail = line[-1].tail if len(line) else None
    for index, child in enumerate(line):
        if etree.QName(child).localname in _AFTER_TEXT_EQUIV:
            line.insert(index, equiv)
            return
    line.append(equiv)


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
    value = f"Pisar {__version__}; model {about.get('model', '?')}; campaign {about.get('campaign', '?')}; confidence {CONFIDENCE_FORMULA}"
    etree.SubElement(metadata, f"{ns}MetadataItem", type="processingStep", name="text recognition", value=scrub(value), date=now_utc())


def _target(root: Path, layout_key: str) -> Path:
    """The output file: the input's key under ``root``, each segment made safe (a key never writes outside it)."""
    return root.joinpath(*(safe_segment(segment) for segment in PurePosixPath(layout_key).parts))


def _left_out(notes: list[str]) -> str | None:
    if not notes:
        return None
    shown = "; ".join(notes[:3]) + (f"; and {len(notes) - 3} more" if len(notes) > 3 else "")
    return f"{len(notes)} layout files left out ({shown})"
