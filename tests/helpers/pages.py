"""Pages built from real print lines for the page-mode tests: the lines pasted onto a canvas, and their PAGE XML."""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from tests.helpers.paths import SCHEMAS

PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"


def pasted_page(lines: list[Path], seed: int = 0) -> tuple[Image.Image, list[tuple[Path, tuple[int, int]]]]:
    """Real print lines pasted onto a white 2400 x 1600 canvas at scattered offsets, one per band."""
    rng = random.Random(seed)
    canvas = Image.new("L", (2400, 100 + 130 * len(lines)), 255)
    placed = []
    for i, path in enumerate(lines):
        image = Image.open(path).convert("L")
        offset = (rng.randrange(20, 2400 - image.width - 20), 40 + 130 * i + rng.randrange(0, 10))
        canvas.paste(image, offset)
        placed.append((path, offset))
    return canvas, placed


def rectangle(left: int, top: int, width: int, height: int) -> tuple[tuple[int, int], ...]:
    right, bottom = left + width - 1, top + height - 1
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def page_xml(
    image_name: str, size: tuple[int, int], lines: list[tuple[str, tuple[tuple[int, int], ...]]], texts: dict[str, str] | None = None
) -> bytes:
    """A PAGE 2019 file naming ``image_name``: one TextRegion holding these (id, polygon) lines, in order,
    each with its ground truth from ``texts`` where given."""

    def text_equiv(line_id: str) -> str:
        if not texts or line_id not in texts:
            return ""
        return f"<TextEquiv><Unicode>{escape(texts[line_id])}</Unicode></TextEquiv>"

    body = "".join(
        f'<TextLine id="{line_id}"><Coords points="{" ".join(f"{x},{y}" for x, y in polygon)}"/>{text_equiv(line_id)}</TextLine>'
        for line_id, polygon in lines
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><PcGts xmlns="{PAGE_2019}"><Metadata><Creator>tests</Creator><Created>2026-12-01T00:00:00</Created><LastChange>2026-12-01T00:00:00</LastChange></Metadata>'
        f'<Page imageFilename="{image_name}" imageWidth="{size[0]}" imageHeight="{size[1]}">'
        f'<TextRegion id="r1"><Coords points="0,0 {size[0] - 1},0 {size[0] - 1},{size[1] - 1} 0,{size[1] - 1}"/>{body}</TextRegion>'
        f"</Page></PcGts>"
    ).encode()


def page_schema():  # -> lxml.etree.XMLSchema
    """The official PAGE 2019-07-15 schema (tests/schemas), to validate what Pisar writes."""
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(SCHEMAS / "pagecontent-2019-07-15.xsd")))
