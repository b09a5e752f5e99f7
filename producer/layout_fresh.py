"""Layout files built afresh from a page's layout, for an input of the other format (or an older ALTO).

Every layout format in gives every layout format out: a PAGE input asked for as ALTO, or an ALTO 2
or 3 one, becomes ALTO 4.4 (``as_alto``); an ALTO input asked for as PAGE becomes PAGE 2019
(``as_page``). What both formats hold is carried over: the scan's name and size, the regions
(``TextRegion`` / ``TextBlock``), each line's id, polygon, box and baseline, in reading order, and
each line's reading as words with their confidences. A line Pisar did not read keeps the text the
input held for it. Elements only one format has (ALTO styles and tags, PAGE's other region types)
stay in the input, which is never changed.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from lxml import etree

from pisar import __version__
from pisar.errors import DuplicateLineId, NoLineId
from pisar.layout import LayoutLine, PageLayout
from pisar.producer.export_pages import ALTO_NS, ALTO_SCHEMA, PAGE_NS, PAGE_SCHEMA, XSI, now_utc
from pisar.producer.layout_parts import (
    Ids,
    append_alto_processing,
    append_alto_words,
    page_processing_item,
    page_text_equiv,
    page_words,
    place,
    reading_words,
    union,
)
from pisar.xml_text import XmlScrubber

_ID_PROBLEMS = (NoLineId, DuplicateLineId)  # such a line's catalog id is a stand-in, not the file's
Readings = dict[str, dict[str, Any]]


def as_alto(layout: PageLayout, readings: Readings, about: dict[str, str], scrub: XmlScrubber) -> etree._Element:
    """ALTO 4.4 from the layout: its regions as TextBlocks and its TextLines with their ids, boxes,
    polygons (``Shape``) and baselines, in reading order, each with its words. A line without a
    reading keeps its geometry and an empty ``String``; a line without a usable id gets one."""
    alto = etree.Element(f"{{{ALTO_NS}}}alto", nsmap={None: ALTO_NS, "xsi": XSI})
    alto.set(f"{{{XSI}}}schemaLocation", f"{ALTO_NS} {ALTO_SCHEMA}")
    description = etree.SubElement(alto, f"{{{ALTO_NS}}}Description")
    etree.SubElement(description, f"{{{ALTO_NS}}}MeasurementUnit").text = "pixel"
    source = etree.SubElement(description, f"{{{ALTO_NS}}}sourceImageInformation")
    etree.SubElement(source, f"{{{ALTO_NS}}}fileName").text = scrub(layout.image)
    append_alto_processing(description, ALTO_NS, "pisar", about, scrub)
    width, height = _size(layout)
    page = etree.SubElement(etree.SubElement(alto, f"{{{ALTO_NS}}}Layout"), f"{{{ALTO_NS}}}Page", ID="page1", PHYSICAL_IMG_NR="1")
    page.set("WIDTH", str(width))
    page.set("HEIGHT", str(height))
    space = etree.SubElement(page, f"{{{ALTO_NS}}}PrintSpace", HPOS="0", VPOS="0", WIDTH=str(width), HEIGHT=str(height))
    ids = Ids()
    for region_id, group in groupby(layout.lines, key=lambda line: line.region_id):
        lines = list(group)
        block = etree.SubElement(space, f"{{{ALTO_NS}}}TextBlock", ID=ids.take(region_id, "block"))
        place(block, union([line.box for line in lines if line.box]))
        for line in lines:
            element = etree.SubElement(block, f"{{{ALTO_NS}}}TextLine", ID=ids.take(_own_id(line), "line"))
            place(element, line.box)
            if line.baseline:
                element.set("BASELINE", " ".join(f"{x},{y}" for x, y in line.baseline))
            if len(line.polygon) >= 3:
                shape = etree.SubElement(element, f"{{{ALTO_NS}}}Shape")
                etree.SubElement(shape, f"{{{ALTO_NS}}}Polygon", POINTS=" ".join(f"{x},{y}" for x, y in line.polygon))
            reading = readings.get(line.line_id)
            kept = None if reading is not None or line.text is None else {"text": line.text, "confidence": None}
            append_alto_words(element, ALTO_NS, reading or kept, scrub)
    etree.indent(alto, space=" ")
    return alto


def as_page(layout: PageLayout, readings: Readings, about: dict[str, str], scrub: XmlScrubber) -> etree._Element:
    """PAGE 2019 from the layout: ``Metadata`` naming Pisar, the ``Page`` with its scan and size, a
    ``ReadingOrder`` of the regions, and each region's TextLines with ``Coords``, ``Baseline``,
    ``Word``s and the reading's ``TextEquiv@conf`` (the input's own text where Pisar read nothing)."""
    ns = f"{{{PAGE_NS}}}"
    document = etree.Element(f"{ns}PcGts", nsmap={None: PAGE_NS, "xsi": XSI})
    document.set(f"{{{XSI}}}schemaLocation", f"{PAGE_NS} {PAGE_SCHEMA}")
    metadata = etree.SubElement(document, f"{ns}Metadata")
    etree.SubElement(metadata, f"{ns}Creator").text = f"Pisar {__version__}"
    etree.SubElement(metadata, f"{ns}Created").text = now_utc()
    etree.SubElement(metadata, f"{ns}LastChange").text = now_utc()
    etree.SubElement(metadata, f"{ns}Comments").text = scrub(f"built from an ALTO {layout.version} layout")
    metadata.append(page_processing_item(ns, about, scrub))
    width, height = _size(layout)
    page = etree.SubElement(document, f"{ns}Page", imageFilename=scrub(layout.image), imageWidth=str(width), imageHeight=str(height))
    ids = Ids()
    regions = [(ids.take(region_id, "region"), list(group)) for region_id, group in groupby(layout.lines, key=lambda line: line.region_id)]
    if regions:
        order = etree.SubElement(etree.SubElement(page, f"{ns}ReadingOrder"), f"{ns}OrderedGroup", id=ids.take(None, "order"))
        order.set("caption", "Regions reading order")
        for index, (region_id, _) in enumerate(regions):
            etree.SubElement(order, f"{ns}RegionRefIndexed", index=str(index), regionRef=region_id)
    for region_id, lines in regions:
        region = etree.SubElement(page, f"{ns}TextRegion", id=region_id)
        etree.SubElement(region, f"{ns}Coords", points=_box_points(union([line.box for line in lines if line.box])))
        for line in lines:
            element = etree.SubElement(region, f"{ns}TextLine", id=ids.take(_own_id(line), "line"))
            points = _line_points(line)
            etree.SubElement(element, f"{ns}Coords", points=points)
            if len(line.baseline) >= 2:
                etree.SubElement(element, f"{ns}Baseline", points=" ".join(f"{x},{y}" for x, y in line.baseline))
            reading = readings.get(line.line_id)
            if reading is not None:
                element.extend(page_words(element, ns, reading_words(reading, scrub), ids, points))
                element.append(page_text_equiv(ns, scrub(reading["text"] or ""), reading["confidence"]))
            elif line.text is not None:
                element.append(page_text_equiv(ns, scrub(line.text), None))
    etree.indent(document, space=" ")
    return document


def _own_id(line: LayoutLine) -> str | None:
    """The line's id in the input, unless it had none or a repeated one (its catalog id is then a stand-in)."""
    return None if isinstance(line.problem, _ID_PROBLEMS) else line.line_id


def _size(layout: PageLayout) -> tuple[int, int]:
    """The scan's size as the layout gives it, else the extent of its lines."""
    boxes = [line.box for line in layout.lines if line.box]
    return layout.width or max((b[2] for b in boxes), default=1), layout.height or max((b[3] for b in boxes), default=1)


def _box_points(box: tuple[int, int, int, int] | None) -> str:
    """A box's four corners as PAGE points (right and bottom inclusive); a point at the origin for none."""
    if box is None:
        return "0,0 0,0"
    left, top, right, bottom = box
    return f"{left},{top} {right - 1},{top} {right - 1},{bottom - 1} {left},{bottom - 1}"


def _line_points(line: LayoutLine) -> str:
    """The line's polygon, else its baseline's points, as PAGE ``Coords`` (which every TextLine must have)."""
    points = line.polygon if len(line.polygon) >= 2 else line.baseline
    return " ".join(f"{x},{y}" for x, y in points) if len(points) >= 2 else "0,0 0,0"
