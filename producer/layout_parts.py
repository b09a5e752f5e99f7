"""The pieces every layout writer shares: ids, words with their confidences, Pisar's processing record, boxes.

Used by the in-place rewrites (``producer/export_writeback.py``) and by the files built afresh from
a layout of the other format (``producer/layout_fresh.py``), so a word, an id or a processing
record is written one way whichever path made the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from lxml import etree

from pisar.producer.export_pages import now_utc
from pisar.reader.confidence import FORMULA as CONFIDENCE_FORMULA
from pisar.words import confident_words
from pisar.xml_text import XmlScrubber

_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*")  # what an xsd:ID may be (ASCII subset): anything else gets a made id
WORD_NOTE = "word confidence per word (the line's where none was stored); word positions not aligned (PAGE Word Coords are the line's)"
Box = tuple[int, int, int, int]


class Ids:
    """XML ids: the file's own where it is a usable, unused one; ``pisar_block3``/``pisar_line7`` otherwise."""

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


def reading_words(reading: dict[str, Any], scrub: XmlScrubber) -> list[tuple[str, float | None]]:
    """An export record's words, as XML can hold them, each with its confidence."""
    return confident_words(scrub(reading["text"] or ""), reading.get("word_confidences"), reading["confidence"])


def describe_run(about: dict[str, str]) -> str:
    """What a file's processing record says of this run: the model, the campaign, how confidence was made."""
    return f"model {about.get('model', '?')}; campaign {about.get('campaign', '?')}; confidence {CONFIDENCE_FORMULA}; {WORD_NOTE}"


# --- ALTO ------------------------------------------------------------------------------------


def append_alto_words(line: etree._Element, ns: str, reading: dict[str, Any] | None, scrub: XmlScrubber) -> None:
    """The reading's words as ``String``s, each with its own ``WC`` (``pisar.words.confident_words``),
    with an ``SP`` between them; an empty ``String`` where there are no words, since ALTO wants one in
    every TextLine (an empty reading's carries the line's confidence: how sure the model was)."""
    found = [] if reading is None else reading_words(reading, scrub)
    for index, (word, confidence) in enumerate(found or [("", None if reading is None else reading["confidence"])]):
        if index:
            etree.SubElement(line, f"{{{ns}}}SP")
        etree.SubElement(line, f"{{{ns}}}String", CONTENT=word, **({} if confidence is None else {"WC": f"{confidence:.4f}"}))


def append_alto_processing(description: etree._Element, ns: str, element_id: str, about: dict[str, str], scrub: XmlScrubber) -> None:
    """ALTO's record of this run: when, with which model and campaign, by which Pisar."""
    from pisar import __version__

    processing = etree.SubElement(description, f"{{{ns}}}Processing", ID=element_id)
    etree.SubElement(processing, f"{{{ns}}}processingDateTime").text = now_utc()
    etree.SubElement(processing, f"{{{ns}}}processingStepSettings").text = scrub(describe_run(about))
    software = etree.SubElement(processing, f"{{{ns}}}processingSoftware")
    etree.SubElement(software, f"{{{ns}}}softwareName").text = "Pisar"
    etree.SubElement(software, f"{{{ns}}}softwareVersion").text = __version__


def place(element: etree._Element, box: Box | None) -> None:
    """HPOS/VPOS/WIDTH/HEIGHT from a (left, top, right, bottom) box, right and bottom exclusive."""
    if box is not None:
        left, top, right, bottom = box
        for name, value in (("HPOS", left), ("VPOS", top), ("WIDTH", right - left), ("HEIGHT", bottom - top)):
            element.set(name, str(value))


def union(boxes: list[Box]) -> Box | None:
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


# --- PAGE ------------------------------------------------------------------------------------


def page_text_equiv(ns: str, text: str, confidence: float | None) -> etree._Element:
    """``TextEquiv`` (``conf`` when known) holding ``Unicode``; ``ns`` is ``{namespace}``."""
    equiv = etree.Element(f"{ns}TextEquiv", {} if confidence is None else {"conf": f"{confidence:.4f}"})
    etree.SubElement(equiv, f"{ns}Unicode").text = text
    return equiv


def page_words(line: etree._Element, ns: str, found: list[tuple[str, float | None]], ids: Ids, points: str | None) -> list[etree._Element]:
    """One ``Word`` per word, each with its own ``TextEquiv@conf``. Pisar does not align words with the
    scan, so each Word's ``Coords`` are the line's ``points`` (the file's metadata says so); without
    them no Words, as a Word must have Coords."""
    if not points:
        return []
    words = []
    for number, (word, confidence) in enumerate(found, start=1):
        element = etree.Element(f"{ns}Word", id=ids.take(f"{line.get('id')}_w{number}", "word"))
        etree.SubElement(element, f"{ns}Coords", points=points)
        element.append(page_text_equiv(ns, word, confidence))
        words.append(element)
    return words


def page_processing_item(ns: str, about: dict[str, str], scrub: XmlScrubber) -> etree._Element:
    """PAGE's record of this run: a ``MetadataItem`` of type processingStep naming Pisar and the model."""
    from pisar import __version__

    value = f"Pisar {__version__}; {describe_run(about)}"
    return etree.Element(f"{ns}MetadataItem", type="processingStep", name="text recognition", value=scrub(value), date=now_utc())
