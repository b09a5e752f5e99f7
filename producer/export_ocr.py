"""Search formats, one file per page: MiniOCR for Solr's OCR highlighting plugin, and hOCR.

solr-ocrhighlighting (dbmdz) reads MiniOCR fastest (ALTO works but is slow on large collections,
its issue #479): ``<ocr><p xml:id wh="W H"><b><l><w x="x y w h">word</w> ...</l></b></p></ocr>``,
the boxes in the scan's pixels. hOCR is the HTML microformat Tesseract and many tools read:
``ocr_page``, ``ocr_line`` and ``ocrx_word`` spans with ``bbox`` and ``x_wconf`` (0-100).

Each page's file goes to ``OUT/<its layout key, less the suffix>.xml`` (MiniOCR) or ``.hocr``. A
word's box is its line's: Pisar does not align words with the scan (``producer/page_text.py``).
Characters XML cannot hold become U+FFFD, as in every XML export.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from pisar import __version__
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_pages import Export, safe_segment
from pisar.producer.page_text import Gathered, LayoutFiles, PageText, page_texts
from pisar.xml_text import XmlScrubber

OCR_FORMATS = ("miniocr", "hocr")
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_ocr(records: Iterable[dict[str, Any]], fmt: str, root: Path, about: dict[str, str], pages_from: LayoutFiles) -> Export:
    """One ``fmt`` file per page under ``root``; returns the counts."""
    scrub, left_out, written = XmlScrubber(), Gathered(), Export()
    suffix, render = {"miniocr": (".xml", _miniocr), "hocr": (".hocr", _hocr)}[fmt]
    for page in page_texts(records, pages_from, left_out):
        target = page_file(root, page.page, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(str(target), binary=True) as handle:
            handle.write(render(page, about, scrub))
        written.files += 1
        written.records += len(page.lines)
    written.error_lines = left_out.error_lines
    notes = [note for note in (scrub.describe(), _unread(left_out)) if note]
    written.replaced = "; ".join(notes) or None
    return written


def page_file(root: Path, page: str, suffix: str) -> Path:
    """``root/<page key's folders>/<its stem><suffix>``, each segment made safe for a file system."""
    path = PurePosixPath(page)
    segments = [safe_segment(s) for s in path.parent.parts] + [safe_segment(path.stem) + suffix]
    return root.joinpath(*segments)


def page_id(page: str) -> str:
    """An XML name for a page (``xml:id`` must start with a letter and hold no ``/``)."""
    return "page_" + _NOT_NAME.sub("_", page.rsplit(".", 1)[0]).strip("_")


def _miniocr(page: PageText, about: dict[str, str], scrub: XmlScrubber) -> bytes:
    root = ET.Element("ocr")
    p = ET.SubElement(root, "p", {"xml:id": page_id(page.page), "wh": f"{page.width} {page.height}"})
    block = ET.SubElement(p, "b")
    for line in page.lines:
        element = ET.SubElement(block, "l")
        left, top, right, bottom = line.box
        previous = None
        for word, _ in line.words:
            if previous is not None:
                previous.tail = " "
            previous = ET.SubElement(element, "w", {"x": f"{left} {top} {right - left} {bottom - top}"})
            previous.text = scrub(word)
    comment = ET.Comment(f" Pisar {__version__}, model {scrub(about.get('model', ''))}; word boxes are their lines' ")
    root.insert(0, comment)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _hocr(page: PageText, about: dict[str, str], scrub: XmlScrubber) -> bytes:
    html = ET.Element("html", {"xmlns": "http://www.w3.org/1999/xhtml", "xml:lang": "und"})
    head = ET.SubElement(html, "head")
    ET.SubElement(head, "title").text = scrub(page.page)
    ET.SubElement(head, "meta", {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"})
    ET.SubElement(head, "meta", {"name": "ocr-system", "content": f"Pisar {__version__} ({scrub(about.get('model', ''))})"})
    ET.SubElement(head, "meta", {"name": "ocr-capabilities", "content": "ocr_page ocr_line ocrx_word"})
    body = ET.SubElement(html, "body")
    image = f'; image "{scrub(page.image)}"' if page.image else ""
    div = ET.SubElement(
        body, "div", {"class": "ocr_page", "id": page_id(page.page), "title": f"bbox 0 0 {page.width} {page.height}{image}"}
    )
    for n, line in enumerate(page.lines, start=1):
        left, top, right, bottom = line.box
        bbox = f"bbox {left} {top} {right} {bottom}"
        span = ET.SubElement(div, "span", {"class": "ocr_line", "id": f"line_{n}", "title": bbox})
        previous = None
        for m, (word, confidence) in enumerate(line.words, start=1):
            if previous is not None:
                previous.tail = " "
            wconf = f"; x_wconf {round(confidence * 100)}" if confidence is not None else ""
            previous = ET.SubElement(span, "span", {"class": "ocrx_word", "id": f"word_{n}_{m}", "title": bbox + wconf})
            previous.text = scrub(word)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n' + ET.tostring(html, encoding="utf-8")


def _unread(left_out: Gathered) -> str | None:
    if not left_out.pages_unread:
        return None
    return f"{len(left_out.pages_unread)} pages left out, their layouts unreadable now (e.g. {left_out.pages_unread[0]})"
