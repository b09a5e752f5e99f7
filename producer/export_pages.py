"""Exports with one file per source folder: plain text, ALTO 4.4 and PAGE XML 2019.

Archives cut each page into line images and keep one page's lines in one folder, so a folder is
the unit these formats describe: ``scans/f1/op2/page_007/*.png`` becomes
``OUT/scans/f1/op2/page_007.xml`` (or ``.txt``). Lines are in key order.

Pisar reads line images, not page scans, so there is no page geometry to report: the line images
are placed one under the other in key order, each at its own size (``line.width``, ``line.height``),
and the source key of every line is in the file (ALTO ``OtherTag``, PAGE ``UserAttribute``).
Confidence (``geomean_text_token_prob_v3``): PAGE ``TextEquiv@conf`` on the line, and ALTO ``WC``
on each word, the word's own (the geometric mean of its tokens' probabilities, ``pisar.words``) or,
for a result stored without one, the line's, since ALTO has no line-level confidence.

Records arrive in byte order, so each folder's lines come in one run, interleaved only with its
subfolders' runs; only the folders on the current path are held in memory. Error lines have no
text and are counted, not written. Each file is written beside its target and renamed into place.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pisar import __version__
from pisar.producer.atomic_output import atomic_output
from pisar.reader.confidence import FORMULA as CONFIDENCE_FORMULA
from pisar.words import confident_words
from pisar.xml_text import XmlScrubber

PAGE_FORMATS = ("txt", "alto", "page")
ROOT_NAME = "_root"  # the file for lines at the top of the source, which have no folder
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA = "http://www.loc.gov/alto/v4/alto-4-4.xsd"
PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_SCHEMA = f"{PAGE_NS}/pagecontent.xsd"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# A name segment a file system would act on: separators, controls, and what Windows forbids.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f\\/:*?"<>|%]')
_BREAKS = re.compile("[\r\n\x0b\x0c\x85\u2028\u2029]+")


@dataclass
class Export:
    """What an export wrote, for the operator's one-line summary."""

    records: int = 0
    files: int = 0
    error_lines: int = 0  # left out of txt/alto/page: they have no text
    replaced: str | None = None

    def describe(self, target: str) -> str:
        parts = [f"{self.records} lines written to {target}"]
        if self.files:
            parts[0] += f" in {self.files} files"
        if self.error_lines:
            parts.append(f"{self.error_lines} error lines left out (no text)")
        if self.replaced:
            parts.append(self.replaced)
        return "; ".join(parts)


@dataclass
class _Folder:
    name: str
    lines: list[dict[str, Any]] = field(default_factory=list)


def folder_of(key: str) -> str:
    return key.rpartition("/")[0]


def file_for(root: Path, folder: str, suffix: str) -> Path:
    """Where a folder's file goes: the folder path with each segment made safe, plus ``suffix``."""
    segments = [safe_segment(s) for s in folder.split("/")] if folder else [ROOT_NAME]
    return root.joinpath(*segments[:-1], segments[-1] + suffix)


def safe_segment(segment: str) -> str:
    """A key's folder segment as a file name: unsafe characters as %XX, dot names escaped; Cyrillic kept."""
    escaped = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), segment)
    return escaped if escaped.strip(".") else escaped.replace(".", "%2E") or "%20"


def write_pages(records: Iterable[dict[str, Any]], fmt: str, root: Path, about: dict[str, str]) -> Export:
    """Write one file per source folder under ``root``; returns the counts."""
    scrub = XmlScrubber()
    render = {"txt": _text_file, "alto": _alto_file, "page": _page_file}[fmt]
    suffix = ".txt" if fmt == "txt" else ".xml"
    result = Export()
    open_folders: list[_Folder] = []  # the current folder and its ancestors that still have lines to come
    done: set[str] = set()
    root.mkdir(parents=True, exist_ok=True)

    def close(folder: _Folder) -> None:
        done.add(folder.name)
        if folder.lines:
            with atomic_output(file_for(root, folder.name, suffix)) as handle:
                handle.write(render(folder, about, scrub))
            result.files += 1

    for record in records:
        if record["status"] != "ok":
            result.error_lines += 1
            continue
        name = folder_of(record["key"])
        while open_folders and not _within(name, open_folders[-1].name):
            close(open_folders.pop())
        if not open_folders or open_folders[-1].name != name:
            if name in done:
                raise RuntimeError(f"lines of folder {name!r} came in two runs: the records are not in byte order")
            open_folders.append(_Folder(name))
        open_folders[-1].lines.append(record)
        result.records += 1
    while open_folders:
        close(open_folders.pop())
    result.replaced = scrub.describe()
    return result


def _within(folder: str, ancestor: str) -> bool:
    return folder == ancestor or ancestor == "" or folder.startswith(ancestor + "/")


def _text_file(folder: _Folder, about: dict[str, str], scrub: XmlScrubber) -> str:
    """One line of text per line image; a break inside a text becomes a space so the count stays."""
    return "".join(_BREAKS.sub(" ", line["text"] or "") + "\n" for line in folder.lines)


@dataclass(frozen=True)
class _Box:
    x: int
    y: int
    width: int
    height: int

    def points(self) -> str:
        right, bottom = self.x + self.width, self.y + self.height
        return f"{self.x},{self.y} {right},{self.y} {right},{bottom} {self.x},{bottom}"


def _stacked(lines: list[dict[str, Any]]) -> tuple[list[_Box], _Box]:
    """Each line's box with the images one under the other, and the page box around them all."""
    boxes, top = [], 0
    for line in lines:
        width, height = line.get("width") or 1, line.get("height") or 1  # rows older than migration 0004 have no size
        boxes.append(_Box(0, top, width, height))
        top += height
    return boxes, _Box(0, 0, max(b.width for b in boxes), top)


def now_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _describe_run(about: dict[str, str]) -> str:
    model = about.get("model", "unknown model")
    return (
        f"Pisar {__version__}; campaign {about.get('campaign', '?')}; model {model}; "
        f"confidence {CONFIDENCE_FORMULA} (WC per word); line images stacked top to bottom in key order"
    )


def _xml(root: ET.Element) -> str:
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _alto_file(folder: _Folder, about: dict[str, str], scrub: XmlScrubber) -> str:
    boxes, page = _stacked(folder.lines)
    alto = ET.Element("alto", {"xmlns": ALTO_NS, "xmlns:xsi": XSI, "xsi:schemaLocation": f"{ALTO_NS} {ALTO_SCHEMA}"})
    description = ET.SubElement(alto, "Description")
    ET.SubElement(description, "MeasurementUnit").text = "pixel"
    ET.SubElement(ET.SubElement(description, "sourceImageInformation"), "fileName").text = scrub(folder.name or ROOT_NAME)
    processing = ET.SubElement(description, "Processing", ID="pisar")
    ET.SubElement(processing, "processingDateTime").text = now_utc()
    ET.SubElement(processing, "processingStepSettings").text = scrub(_describe_run(about))
    software = ET.SubElement(processing, "processingSoftware")
    ET.SubElement(software, "softwareName").text = "Pisar"
    ET.SubElement(software, "softwareVersion").text = __version__
    tags = ET.SubElement(alto, "Tags")
    for number, line in enumerate(folder.lines, 1):
        ET.SubElement(tags, "OtherTag", ID=f"key{number}", TYPE="source image", LABEL="key", DESCRIPTION=scrub(line["key"]))
    page_element = ET.SubElement(
        ET.SubElement(alto, "Layout"), "Page", ID="page1", PHYSICAL_IMG_NR="1", WIDTH=str(page.width), HEIGHT=str(page.height)
    )
    space = ET.SubElement(page_element, "PrintSpace", _position(page))
    block = ET.SubElement(space, "TextBlock", {"ID": "block1", **_position(page)})
    for number, (line, box) in enumerate(zip(folder.lines, boxes, strict=True), 1):
        text_line = ET.SubElement(block, "TextLine", {"ID": f"line{number}", "TAGREFS": f"key{number}", **_position(box)})
        found = confident_words(scrub(line["text"] or ""), line.get("word_confidences"), line["confidence"])
        for index, (word, confidence) in enumerate(found or [("", line["confidence"])]):  # ALTO wants a String in every TextLine
            if index:
                ET.SubElement(text_line, "SP")
            ET.SubElement(text_line, "String", {"CONTENT": word, **({} if confidence is None else {"WC": f"{confidence:.4f}"})})
    return _xml(alto)


def _position(box: _Box) -> dict[str, str]:
    return {"HPOS": str(box.x), "VPOS": str(box.y), "WIDTH": str(box.width), "HEIGHT": str(box.height)}


def _page_file(folder: _Folder, about: dict[str, str], scrub: XmlScrubber) -> str:
    boxes, page = _stacked(folder.lines)
    pcgts = ET.Element("PcGts", {"xmlns": PAGE_NS, "xmlns:xsi": XSI, "xsi:schemaLocation": f"{PAGE_NS} {PAGE_SCHEMA}"})
    metadata = ET.SubElement(pcgts, "Metadata")
    ET.SubElement(metadata, "Creator").text = f"Pisar {__version__}"
    now = now_utc()
    ET.SubElement(metadata, "Created").text = now
    ET.SubElement(metadata, "LastChange").text = now
    ET.SubElement(metadata, "Comments").text = scrub(_describe_run(about))
    page_element = ET.SubElement(
        pcgts, "Page", imageFilename=scrub(folder.name or ROOT_NAME), imageWidth=str(page.width), imageHeight=str(page.height)
    )
    region = ET.SubElement(page_element, "TextRegion", id="region1", type="paragraph")
    ET.SubElement(region, "Coords", points=page.points())
    for number, (line, box) in enumerate(zip(folder.lines, boxes, strict=True), 1):
        text_line = ET.SubElement(region, "TextLine", id=f"line{number}")
        ET.SubElement(text_line, "Coords", points=box.points())
        equiv = ET.SubElement(text_line, "TextEquiv", {} if line["confidence"] is None else {"conf": f"{line['confidence']:.4f}"})
        ET.SubElement(equiv, "Unicode").text = scrub(line["text"] or "")
        user = ET.SubElement(text_line, "UserDefined")
        ET.SubElement(user, "UserAttribute", name="key", type="xsd:string", value=scrub(line["key"]))
    return _xml(pcgts)
