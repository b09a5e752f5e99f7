"""Layout files matched to canvases: `--layouts DIR` for manifests that link no PAGE or ALTO file.

An archive often keeps its segmentation apart from its IIIF server: a Transkribus or eScriptorium
export of the same volume, one PAGE/ALTO file per page, each naming its image by the file name the
tool was given. A file is matched to the canvas that one of its names identifies, compared without
case, folder or suffix: its ``imageFilename`` / ``fileName``, or its own file name, against the
canvas's label, its image service's identifier (the last part of the service URL), its image's
file name, or the last part of its id. A file that names no canvas, or more than one, and a canvas
two files name, are left unmatched and reported: a page is never read with another page's layout.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from pisar.catalog.canvases import CanvasRow


@dataclass
class Matched:
    """Canvas key -> layout key, and what could not be matched, for the operator."""

    layouts: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # layout keys that name no canvas
    ambiguous: list[str] = field(default_factory=list)  # layout keys that name several canvases, or a canvas another file named


def name_of(text: str | None) -> str:
    """A name as compared: its last path segment, URL-decoded, without suffix, lower case."""
    if not text:
        return ""
    path = urlsplit(text).path if "://" in text else text
    last = unquote(path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])
    return PurePosixPath(last).stem.strip().lower() if "." in last else last.strip().lower()


def canvas_names(canvas: CanvasRow) -> set[str]:
    return {n for n in (name_of(canvas.label), name_of(canvas.service), name_of(canvas.image), name_of(canvas.canvas_id)) if n}


def match_layouts(canvases: Iterable[CanvasRow], layouts: dict[str, str]) -> Matched:
    """Match each layout file (its key -> the image name it gives) to at most one canvas, and back."""
    by_name: dict[str, set[str]] = defaultdict(set)
    for canvas in canvases:
        for name in canvas_names(canvas):
            by_name[name].add(canvas.key)
    matched = Matched()
    claimed: dict[str, str] = {}
    for key in sorted(layouts):
        names = {n for n in (name_of(layouts[key]), name_of(key)) if n}
        found = set().union(*(by_name.get(n, set()) for n in names)) if names else set()
        if not found:
            matched.unmatched.append(key)
        elif len(found) > 1:
            matched.ambiguous.append(key)
        else:
            (canvas,) = found
            if canvas in claimed:  # two files name it: neither is used
                matched.ambiguous.extend([key, claimed[canvas]] if claimed[canvas] else [key])
                claimed[canvas] = ""
            else:
                claimed[canvas] = key
    matched.layouts = {canvas: key for canvas, key in claimed.items() if key}
    return matched
