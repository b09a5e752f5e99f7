"""A IIIF campaign's text as annotations on its canvases, for viewers: `pisar export NAME --format annotations`.

Per canvas with text, one annotation page at ``OUT/<manifest>/p0001.json``; per manifest a copy of
it at ``OUT/<manifest>/manifest.json`` whose canvases link their pages, so Mirador or Universal
Viewer opens the copy and shows the text over the scans. The files' ids are under ``--base-url``,
where the operator publishes ``OUT`` (the folder's ``file://`` URL by default).

- Presentation 3 (a 3.0 manifest): an ``AnnotationPage`` of ``Annotation``s with ``motivation:
  supplementing``, each a ``TextualBody`` holding the line's text, targeting ``<canvas id>#xywh=``
  with the line's box on the canvas; the canvas's ``annotations`` lists the page.
- Presentation 2.1 (a 2.1 manifest): an ``sc:AnnotationList`` of ``oa:Annotation``s with a
  ``cnt:ContentAsText`` resource, ``on`` the canvas region; the canvas's ``otherContent`` lists it.

Each annotation carries the line's ``confidence`` and the ``model`` that read it, as properties of an
extension context placed before the Presentation context, as the specification asks. A line's box
is its polygon's bounding box in the scan's pixels, scaled to the canvas's coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pisar.catalog import canvases
from pisar.catalog.canvases import CanvasRow
from pisar.errors import ConfigError
from pisar.producer.atomic_output import atomic_output
from pisar.producer.export_ocr import page_file
from pisar.producer.export_pages import Export
from pisar.producer.page_text import Gathered, LayoutFiles, LineText, PageText, page_texts

PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
PRESENTATION_2 = "http://iiif.io/api/presentation/2/context.json"
EXTENSION = {
    "pisar": "https://github.com/pisar-htr/pisar/blob/main/docs/operations.md#",
    "confidence": "pisar:confidence",
    "model": "pisar:model",
}


def write_annotations(
    url: str,
    campaign_id: int,
    records: Iterable[dict[str, Any]],
    root: Path,
    about: dict[str, str],
    pages_from: LayoutFiles,
    base_url: str | None,
) -> Export:
    """Annotation pages per canvas and linked manifest copies under ``root``; returns the counts."""
    manifests = {m.url: m for m in canvases.manifests(url, campaign_id) if m.body is not None}
    if not manifests:
        raise ConfigError("--format annotations is for IIIF campaigns (a source of manifests): this campaign read none")
    base = (base_url or root.resolve().as_uri()).rstrip("/")
    left_out, written = Gathered(), Export()
    linked: dict[str, dict[str, str]] = {}  # manifest URL -> canvas id -> its annotation page's URL
    # every canvas at once, in one streamed query (a few hundred bytes each): not one query per page
    by_key = {row.key: row for rows in canvases.canvas_pages(url, campaign_id, None, page_size=5000) for row in rows}
    for page in page_texts(records, pages_from, left_out):
        canvas = by_key.get(page.page.rsplit(".", 1)[0])
        if canvas is None:
            left_out.pages_unread.append(page.page)
            continue
        target = page_file(root, page.page, ".json")
        page_url = f"{base}/{quote(target.relative_to(root).as_posix())}"
        version = manifests[canvas.manifest_url].version if canvas.manifest_url in manifests else 3
        document = _page_v3(page, canvas, page_url, about) if version == 3 else _list_v2(page, canvas, page_url, about)
        _write_json(target, document)
        linked.setdefault(canvas.manifest_url, {})[canvas.canvas_id] = page_url
        written.files += 1
        written.records += len(page.lines)
    for manifest_url, pages in linked.items():
        manifest = manifests[manifest_url]
        copy = _linked_copy(json.loads(manifest.body or "{}"), manifest.version or 3, pages)
        target = page_file(root, f"{manifest.slug}/manifest.json", ".json")
        copy["id" if manifest.version == 3 else "@id"] = f"{base}/{quote(target.relative_to(root).as_posix())}"
        _write_json(target, copy)
        written.files += 1
    written.error_lines = left_out.error_lines
    if left_out.pages_unread:
        written.replaced = (
            f"{len(left_out.pages_unread)} pages left out, their layouts or canvases unreadable now (e.g. {left_out.pages_unread[0]})"
        )
    return written


def _scaled(line: LineText, page: PageText, canvas: CanvasRow) -> str:
    """``x,y,w,h`` of the line's box on the canvas (the scan's pixels scaled to the canvas's size)."""
    sx = (canvas.width or page.width) / page.width
    sy = (canvas.height or page.height) / page.height
    left, top, right, bottom = line.box
    return f"{round(left * sx)},{round(top * sy)},{max(1, round((right - left) * sx))},{max(1, round((bottom - top) * sy))}"


def _page_v3(page: PageText, canvas: CanvasRow, page_url: str, about: dict[str, str]) -> dict[str, Any]:
    items = [
        {
            "id": f"{page_url}#{quote(line.line_id)}",
            "type": "Annotation",
            "motivation": "supplementing",
            "body": {"type": "TextualBody", "value": line.text, "format": "text/plain"},
            "target": f"{canvas.canvas_id}#xywh={_scaled(line, page, canvas)}",
            "confidence": line.confidence,
            "model": about.get("model", ""),
        }
        for line in page.lines
    ]
    return {"@context": [EXTENSION, PRESENTATION_3], "id": page_url, "type": "AnnotationPage", "items": items}


def _list_v2(page: PageText, canvas: CanvasRow, page_url: str, about: dict[str, str]) -> dict[str, Any]:
    resources = [
        {
            "@id": f"{page_url}#{quote(line.line_id)}",
            "@type": "oa:Annotation",
            "motivation": "sc:painting",
            "resource": {"@type": "cnt:ContentAsText", "format": "text/plain", "chars": line.text},
            "on": f"{canvas.canvas_id}#xywh={_scaled(line, page, canvas)}",
            "confidence": line.confidence,
            "model": about.get("model", ""),
        }
        for line in page.lines
    ]
    return {"@context": [EXTENSION, PRESENTATION_2], "@id": page_url, "@type": "sc:AnnotationList", "resources": resources}


def _linked_copy(manifest: dict[str, Any], version: int, pages: dict[str, str]) -> dict[str, Any]:
    """The manifest with each canvas that has text linking its annotation page (list, in 2.1)."""
    if version == 3:
        for canvas in manifest.get("items", []):
            if isinstance(canvas, dict) and canvas.get("id") in pages:
                canvas["annotations"] = [*canvas.get("annotations", []), {"id": pages[canvas["id"]], "type": "AnnotationPage"}]
        return manifest
    for sequence in manifest.get("sequences", []):
        for canvas in sequence.get("canvases", []) if isinstance(sequence, dict) else []:
            if isinstance(canvas, dict) and canvas.get("@id") in pages:
                canvas["otherContent"] = [*canvas.get("otherContent", []), {"@id": pages[canvas["@id"]], "@type": "sc:AnnotationList"}]
    return manifest


def _write_json(target: Path, document: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(str(target)) as handle:
        json.dump(document, handle, ensure_ascii=False, indent=1)
