"""A detected page as PAGE XML 2019: how the catalog stores it, and how the readers read it back.

Stored as PAGE, a detected page is read by the same code as a PAGE file an archive supplied
(``pisar.layout.read_layout``) and written back by the same exports. PAGE wants every TextLine in a
TextRegion and reads regions in the ``ReadingOrder``'s order, so the lines are grouped into runs
of consecutive lines (in reading order) of the same region; lines in no region get a region of
their own around them. Reading the file back gives the lines in the detector's reading order.
"""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime
from itertools import groupby

from lxml import etree

from pisar import __version__
from pisar.detect.segmentation import DetectedLine, PageSegmentation, Point

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_SCHEMA = "https://www.primaresearch.org/schema/PAGE/gts/pagecontent/2019-07-15/pagecontent.xsd"


def _points(points: tuple[Point, ...]) -> str:
    return " ".join(f"{x},{y}" for x, y in points)


def _box(lines: list[DetectedLine]) -> tuple[Point, ...]:
    xs = [x for line in lines for x, _ in line.polygon]
    ys = [y for line in lines for _, y in line.polygon]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def page_xml(segmentation: PageSegmentation, scan_key: str, frame: int = 0) -> bytes:
    """The PAGE file of a detected page; its ``imageFilename`` is the scan's name beside it (PAGE has
    no place for a page of a multi-page file: ``frame`` is said in the comments)."""
    ns = f"{{{PAGE_NS}}}"
    root = etree.Element(f"{ns}PcGts", nsmap={None: PAGE_NS, "xsi": _XSI})
    root.set(f"{{{_XSI}}}schemaLocation", f"{PAGE_NS} {_SCHEMA}")
    metadata = etree.SubElement(root, f"{ns}Metadata")
    etree.SubElement(metadata, f"{ns}Creator").text = f"Pisar {__version__}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    etree.SubElement(metadata, f"{ns}Created").text = now
    etree.SubElement(metadata, f"{ns}LastChange").text = now
    of_file = f"; page {frame + 1} of the file" if frame else ""
    etree.SubElement(metadata, f"{ns}Comments").text = f"lines detected by {segmentation.detector}{of_file}"
    page = etree.SubElement(
        root,
        f"{ns}Page",
        imageFilename=posixpath.basename(scan_key),
        imageWidth=str(segmentation.width),
        imageHeight=str(segmentation.height),
    )
    regions = {region.region_id: region for region in segmentation.regions}
    runs: list[tuple[str, tuple[Point, ...], list[DetectedLine]]] = []
    used: set[str] = set()
    for region_id, group in groupby(segmentation.lines, key=lambda line: line.region_id):
        lines = list(group)
        if region_id is not None and region_id in regions:
            element_id = region_id if region_id not in used else f"{region_id}_{len(runs) + 1}"
            polygon = regions[region_id].polygon
        else:
            element_id, polygon = f"g{len(runs) + 1}", _box(lines)
        used.add(element_id)
        runs.append((element_id, polygon, lines))
    empty = [region for region in segmentation.regions if region.region_id not in used]
    if runs:
        order = etree.SubElement(
            etree.SubElement(page, f"{ns}ReadingOrder"), f"{ns}OrderedGroup", id="ro1", caption="Regions reading order"
        )
        for index, (element_id, _, _) in enumerate(runs):
            etree.SubElement(order, f"{ns}RegionRefIndexed", index=str(index), regionRef=element_id)
    for element_id, polygon, lines in runs:
        region = etree.SubElement(page, f"{ns}TextRegion", id=element_id)
        etree.SubElement(region, f"{ns}Coords", points=_points(polygon))
        for line in lines:
            element = etree.SubElement(region, f"{ns}TextLine", id=line.line_id)
            etree.SubElement(element, f"{ns}Coords", points=_points(line.polygon))
            if len(line.baseline) >= 2:
                etree.SubElement(element, f"{ns}Baseline", points=_points(line.baseline))
    for region in empty:  # regions the detector found with no line in them: kept, outside the reading order
        etree.SubElement(etree.SubElement(page, f"{ns}TextRegion", id=region.region_id), f"{ns}Coords", points=_points(region.polygon))
    etree.indent(root, space=" ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
