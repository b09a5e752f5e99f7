"""Page layouts: the text lines of a PAGE or ALTO file, with their ids, geometry and reading order.

Archives hold page scans segmented into lines by Transkribus, eScriptorium/kraken, Loghi or their
own tools, as PAGE XML (2013-07-15 and 2019-07-15, with the ``https://`` namespace some tools
write) or ALTO (v2 to v4). ``read_layout`` turns one such file into a ``PageLayout``: the scan it
names (PAGE ``imageFilename``, ALTO ``sourceImageInformation/fileName``) and one ``LayoutLine`` per
``TextLine`` in reading order (PAGE ``ReadingOrder``, ALTO ``ReadingOrder``, else document order).

Bad input is data, not a crash: a file that does not parse, is too large, or is neither format
raises ``UnreadableLayout``; a line without an id, a repeated id or a line without geometry comes
back with its ``problem`` set (recorded on that line), and a point outside the scan is clamped
with a note. The parser never resolves an entity, loads a DTD or touches the network (no XXE).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from lxml import etree

from pisar.errors import DuplicateLineId, LineError, NoGeometry, NoLineId, UnreadableLayout

MAX_LAYOUT_BYTES = 50 * 2**20  # a page's XML is kilobytes to a few megabytes; beyond this it is refused
_PAGE_NAMESPACE = re.compile(r"^https?://schema\.primaresearch\.org/PAGE/gts/pagecontent/\d{4}-\d{2}-\d{2}$")
_ALTO_NAMESPACE = re.compile(r"^http://(www\.)?loc\.gov/standards/alto/ns-v[234]#$")
Point = tuple[int, int]


LINE_KEY_SEPARATOR = "#"  # an XML id never holds "#", so the last one splits a page line's key, whatever the file's key


def line_key(layout_key: str, line_id: str) -> str:
    """The catalog key of one TextLine of the layout file ``layout_key``: ``<layout key>#<line id>``."""
    return f"{layout_key}{LINE_KEY_SEPARATOR}{line_id}"


def split_line_key(key: str) -> tuple[str, str]:
    """(layout key, line id) of a page line's key."""
    layout_key, separator, line_id = key.rpartition(LINE_KEY_SEPARATOR)
    if not separator:
        raise ValueError(f"{key!r} is not a page line's key (<layout key>{LINE_KEY_SEPARATOR}<line id>)")
    return layout_key, line_id


def is_layout_key(key: str) -> bool:
    """True for the files a page campaign reads: PAGE and ALTO are both ``.xml``."""
    return key.lower().endswith(".xml")


@dataclass(frozen=True)
class LayoutLine:
    """One ``TextLine``: its id, its region, its place in the reading order, its geometry and any ground truth."""

    line_id: str  # the file's own id; for a line without one, a stand-in naming its position
    region_id: str | None
    order: int  # 0-based position in the page's reading order
    polygon: tuple[Point, ...] = ()  # PAGE Coords / ALTO Shape/Polygon, or the ALTO box's corners
    baseline: tuple[Point, ...] = ()
    text: str | None = None  # the TextEquiv / String content already in the file (ground truth, often)
    problem: LineError | None = None  # why this line cannot be read (recorded as its error)
    notes: tuple[str, ...] = ()  # what was done to its geometry (clamped to the scan)

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) around the polygon, right and bottom exclusive; None without one."""
        if not self.polygon:
            return None
        xs, ys = [x for x, _ in self.polygon], [y for _, y in self.polygon]
        return min(xs), min(ys), max(xs) + 1, max(ys) + 1


@dataclass(frozen=True)
class PageLayout:
    """One PAGE or ALTO file."""

    format: str  # "page" or "alto"
    version: str  # the namespace's date (PAGE) or version (ALTO)
    image: str  # the scan's file name as the XML gives it (resolved against the XML's folder by the caller)
    width: int | None
    height: int | None
    lines: list[LayoutLine] = field(default_factory=list)


def read_layout(data: bytes, name: str = "layout") -> PageLayout:
    """Parse one PAGE or ALTO file; ``UnreadableLayout`` (one readable sentence) when it is neither or is broken."""
    if len(data) > MAX_LAYOUT_BYTES:
        raise UnreadableLayout(f"{name}: {len(data)} bytes is more than a page's layout ({MAX_LAYOUT_BYTES} bytes at most)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise UnreadableLayout(f"{name}: not well-formed XML: {exc}") from None
    namespace = etree.QName(root).namespace or ""
    if _PAGE_NAMESPACE.match(namespace):
        return _read_page(root, namespace, name)
    if _ALTO_NAMESPACE.match(namespace):
        return _read_alto(root, namespace, name)
    raise UnreadableLayout(f"{name}: neither PAGE nor ALTO (root element {etree.QName(root).localname!r} in namespace {namespace!r})")


# --- PAGE ------------------------------------------------------------------------------------


def _read_page(root: etree._Element, ns: str, name: str) -> PageLayout:
    page = root.find(f"{{{ns}}}Page")
    if page is None:
        raise UnreadableLayout(f"{name}: a PAGE file without a Page element")
    width, height = _int(page.get("imageWidth")), _int(page.get("imageHeight"))
    regions = [r for r in page.iter(f"{{{ns}}}TextRegion")]
    ranks = _page_region_order(page, ns)
    regions.sort(key=lambda r: ranks.get(r.get("id", ""), len(ranks)))  # stable: unordered regions keep document order
    found = []
    seen: set[int] = set()
    for region in regions:
        for line in region.findall(f"{{{ns}}}TextLine"):
            seen.add(id(line))
            found.append((region.get("id"), line))
    for line in page.iter(f"{{{ns}}}TextLine"):  # lines outside any TextRegion (a table cell, say), in document order
        if id(line) not in seen:
            parent = line.getparent()
            found.append((parent.get("id") if parent is not None else None, line))
    lines = []
    for order, (region_id, line) in enumerate(found):
        lines.append(
            LayoutLine(
                line_id=line.get("id") or "",
                region_id=region_id,
                order=order,
                polygon=_points(_attribute(line.find(f"{{{ns}}}Coords"), "points")),
                baseline=_points(_attribute(line.find(f"{{{ns}}}Baseline"), "points")),
                text=_page_text(line, ns),
            )
        )
    return PageLayout("page", ns.rsplit("/", 1)[-1], page.get("imageFilename") or "", width, height, _checked(lines, width, height))


def _page_region_order(page: etree._Element, ns: str) -> dict[str, int]:
    """Region id -> rank in ``ReadingOrder``: ordered groups by ``index``, unordered ones in document order, nested groups in place."""
    reading = page.find(f"{{{ns}}}ReadingOrder")
    if reading is None:
        return {}
    ranks: dict[str, int] = {}

    def walk(group: etree._Element) -> None:
        children = [c for c in group if isinstance(c.tag, str)]
        if etree.QName(group).localname.startswith("OrderedGroup"):
            children.sort(key=lambda c: _int(c.get("index")) or 0)
        for child in children:
            if child.get("regionRef") and child.get("regionRef") not in ranks:
                ranks[child.get("regionRef")] = len(ranks)
            if "Group" in etree.QName(child).localname:
                walk(child)

    for group in reading:
        if isinstance(group.tag, str):
            walk(group)
    return ranks


def _page_text(line: etree._Element, ns: str) -> str | None:
    """The line's own ``TextEquiv/Unicode`` (the lowest ``index`` when there are several), not its words'."""
    equivs = line.findall(f"{{{ns}}}TextEquiv")
    if not equivs:
        return None
    equivs.sort(key=lambda e: _int(e.get("index")) if e.get("index") is not None else -1)
    unicode = equivs[0].find(f"{{{ns}}}Unicode")
    return unicode.text if unicode is not None and unicode.text is not None else None


# --- ALTO ------------------------------------------------------------------------------------


def _read_alto(root: etree._Element, ns: str, name: str) -> PageLayout:
    version = ns.rstrip("#").rsplit("-", 1)[-1]
    unit = root.findtext(f"{{{ns}}}Description/{{{ns}}}MeasurementUnit") or "pixel"
    if unit.strip() != "pixel":
        raise UnreadableLayout(f"{name}: ALTO measurement unit {unit.strip()!r}; only pixel coordinates can be cut from a scan")
    image = root.findtext(f"{{{ns}}}Description/{{{ns}}}sourceImageInformation/{{{ns}}}fileName") or ""
    page = next(root.iter(f"{{{ns}}}Page"), None)
    if page is None:
        raise UnreadableLayout(f"{name}: an ALTO file without a Page element")
    width, height = _int(page.get("WIDTH")), _int(page.get("HEIGHT"))
    blocks = list(page.iter(f"{{{ns}}}TextBlock"))
    ranks = _alto_block_order(root, ns)
    blocks.sort(key=lambda b: ranks.get(b.get("ID", ""), len(ranks)))
    lines = []
    for block in blocks:
        for line in block.findall(f"{{{ns}}}TextLine"):
            polygon = _points(_attribute(line.find(f"{{{ns}}}Shape/{{{ns}}}Polygon"), "POINTS"))
            if not polygon:
                polygon = _alto_box(line)
            lines.append(
                LayoutLine(
                    line_id=line.get("ID") or "",
                    region_id=block.get("ID"),
                    order=len(lines),
                    polygon=polygon,
                    baseline=_alto_baseline(line.get("BASELINE"), polygon),
                    text=_alto_text(line, ns),
                )
            )
    return PageLayout("alto", version, image, width, height, _checked(lines, width, height))


def _alto_block_order(root: etree._Element, ns: str) -> dict[str, int]:
    """Block id -> rank in ALTO v4's ``ReadingOrder`` (``ElementRef REF``), document order otherwise."""
    ranks: dict[str, int] = {}
    for reference in root.iterfind(f"{{{ns}}}ReadingOrder//{{{ns}}}ElementRef"):
        target = reference.get("REF")
        if target and target not in ranks:
            ranks[target] = len(ranks)
    return ranks


def _alto_box(line: etree._Element) -> tuple[Point, ...]:
    """The corners of ``HPOS/VPOS/WIDTH/HEIGHT``, or none when the box is missing or empty."""
    left, top, width, height = (_number(line.get(a)) for a in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
    if None in (left, top, width, height) or width <= 0 or height <= 0:  # type: ignore[operator]
        return ()
    x0, y0 = round(left), round(top)  # type: ignore[arg-type]
    x1, y1 = round(left + width) - 1, round(top + height) - 1  # type: ignore[operator]
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _alto_baseline(value: str | None, polygon: tuple[Point, ...]) -> tuple[Point, ...]:
    """ALTO 4's BASELINE is a point list; ALTO 2/3's a single y, a line across the box at that height."""
    if not value:
        return ()
    points = _points(value)
    if len(points) >= 2:
        return points
    y = _number(value)
    if y is None or not polygon:
        return ()
    xs = [x for x, _ in polygon]
    return ((min(xs), round(y)), (max(xs), round(y)))


def _alto_text(line: etree._Element, ns: str) -> str | None:
    words = [s.get("CONTENT", "") for s in line.iter(f"{{{ns}}}String")]
    return " ".join(words) if words else None


# --- shared ----------------------------------------------------------------------------------


def _checked(lines: list[LayoutLine], width: int | None, height: int | None) -> list[LayoutLine]:
    """Problems found across the page: ids missing or repeated, no geometry, points outside the scan (clamped)."""
    from dataclasses import replace

    seen: dict[str, int] = {}
    checked = []
    for line in lines:
        changes: dict[str, object] = {}
        if not line.line_id:
            changes.update(line_id=f"(no id: line {line.order + 1})", problem=NoLineId(f"TextLine {line.order + 1} of the page has no id"))
        elif line.line_id in seen:
            seen[line.line_id] += 1
            stand_in = f"{line.line_id} (repeat {seen[line.line_id]})"
            changes.update(line_id=stand_in, problem=DuplicateLineId(f"TextLine id {line.line_id!r} occurs more than once in the page"))
        else:
            seen[line.line_id] = 1
        polygon, notes = line.polygon, list(line.notes)
        if width and height and polygon:
            clamped = tuple((min(max(x, 0), width - 1), min(max(y, 0), height - 1)) for x, y in polygon)
            if clamped != polygon:
                notes.append(f"coordinates outside the {width}x{height} scan clamped to it")
                polygon = clamped
        if "problem" not in changes and not polygon and not line.baseline:
            changes["problem"] = NoGeometry("the TextLine has neither Coords nor a Baseline")
        changes.update(polygon=polygon, notes=tuple(notes))
        checked.append(replace(line, **changes))
    return checked


def _attribute(element: etree._Element | None, name: str) -> str | None:
    return element.get(name) if element is not None else None


def _points(value: str | None) -> tuple[Point, ...]:
    """``"x,y x,y"`` (PAGE, ALTO 4) or ``"x y x y"`` (ALTO 2/3) as integer points; malformed values give none."""
    if not value:
        return ()
    numbers = [_number(n) for n in re.split(r"[\s,]+", value.strip()) if n]
    if not numbers or None in numbers or len(numbers) % 2:
        return ()
    return tuple((round(x), round(y)) for x, y in zip(numbers[0::2], numbers[1::2], strict=True))  # type: ignore[arg-type]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def scan_key(layout_key: str, image_name: str) -> str:
    """The scan's key: the XML's ``imageFilename`` / ``fileName`` resolved against the XML's folder.

    Transkribus and eScriptorium write a bare file name; a Windows path keeps its last part (the
    exports are moved between machines with their scans beside them). A name that leaves the
    source's root (``..`` above it, an absolute path, a URL) is refused: a page must not make a
    worker read another collection's objects.
    """
    name = image_name.strip().replace("\\", "/")
    if not name:
        raise UnreadableLayout(f"{layout_key}: the file names no image")
    if "://" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        name = name.rsplit("/", 1)[-1]
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(layout_key), name))
    if resolved.startswith("../") or resolved == "..":
        raise UnreadableLayout(f"{layout_key}: its image {image_name!r} lies outside the source")
    return resolved


def fitted_to(layout: PageLayout, width: int, height: int) -> PageLayout:
    """The layout's geometry scaled to a scan of ``width`` x ``height`` when the file declares another
    page size: a IIIF server may serve a page smaller than the one the layout was drawn on (its
    ``maxWidth``), and an archive may keep its scans smaller than its PAGE files say."""
    from dataclasses import replace

    if not layout.width or not layout.height or (layout.width, layout.height) == (width, height):
        return layout
    sx, sy = width / layout.width, height / layout.height
    note = f"geometry scaled from the layout's {layout.width}x{layout.height} page to the {width}x{height} scan"

    def scaled(points: tuple[Point, ...]) -> tuple[Point, ...]:
        return tuple((round(x * sx), round(y * sy)) for x, y in points)

    lines = [
        replace(line, polygon=scaled(line.polygon), baseline=scaled(line.baseline), notes=(*line.notes, note)) for line in layout.lines
    ]
    return replace(layout, width=width, height=height, lines=lines)
