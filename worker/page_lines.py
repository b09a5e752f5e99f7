"""Lines of segmented page scans as a shard's input: each PAGE/ALTO file and its scan read once, each line cut from the scan.

A page campaign's line key is ``<layout key>#<line id>`` (``pisar.layout.line_key``): the XML's key
in the source, then the ``TextLine`` id.
The fetch pool prepares a shard's lines in parallel and in key order, so the lines of one page
arrive together: the first of them reads and parses the XML and reads and decodes the scan
(``decode_line``: the same hostile-image limits as a line image, which a 4,000 x 5,000 scan is far
inside), the others wait on that page's lock and reuse both, and the scan is let go when the
shard's last line of that page has been cut. So a page costs one XML read and one scan decode per
shard, and memory holds only the pages in flight.

Everything wrong with a page or a line is that line's ``LineError``, recorded like a corrupt image:
an XML that does not parse, a scan that is missing or unreadable (every line of the page then
carries it), a line whose id is missing or repeated or that has no geometry, a line the XML no
longer holds. An outage (``TransientError``) is not a line's fault and propagates, as for line images.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pisar.errors import ImageTooSmall, LineError, LineNotInLayout, UnreadableImage, UnreadableLayout
from pisar.images import DecodedLine, ImageLimits, decode_line
from pisar.layout import LayoutLine, PageLayout, read_layout, split_line_key
from pisar.page_crop import crop_line
from pisar.storage import Storage
from pisar.worker.fetch import LinePlace, Prepared


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


@dataclass
class _Page:
    """One layout file's state in a shard: parsed once, its scan decoded once, each kept with its error."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    layout: PageLayout | None = None
    image_key: str | None = None  # the scan's key, once the XML has named it
    lines: dict[str, LayoutLine] = field(default_factory=dict)
    scan: DecodedLine | None = None
    error: LineError | None = None  # the XML or the scan could not be read: every line of the page gets it
    loaded: bool = False
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0


class PageLines:
    """The ``prepare`` of a page campaign's shard: each key's line cut from its page's scan and preprocessed."""

    def __init__(
        self,
        storage: Storage,
        limits: ImageLimits,
        preprocess: Callable[[Image.Image], np.ndarray],
        keys: Iterable[str],
        crop: str = "polygon",
        baseline_height: int = 60,
    ) -> None:
        self.storage, self.limits, self.preprocess = storage, limits, preprocess
        self.crop, self.baseline_height = crop, baseline_height
        self._left = Counter(split_line_key(key)[0] for key in keys)  # lines of each page still to cut in this shard
        self._pages: dict[str, _Page] = {}
        self._lock = threading.Lock()

    def prepare(self, key: str) -> Prepared:
        """Fetch (once per page), cut, decode and preprocess one line; its problems returned, not raised."""
        layout_key, line_id = split_line_key(key)
        page = self._page(layout_key)
        place = None
        try:
            started = time.perf_counter()
            with page.lock:  # the page's first line loads it; the others wait for it and reuse it
                first = not page.loaded
                if first:
                    self._load(layout_key, page)
                    page.loaded = True
            waited = time.perf_counter() - started
            line = page.lines.get(line_id)
            if line is not None and page.image_key is not None:  # placed on its page whatever follows, a scan that cannot be read included
                place = LinePlace(line.region_id, page.image_key, line.order)
            if page.error is not None:
                return Prepared(key, error=page.error, place=place)
            if line is None:
                raise LineNotInLayout(f"{layout_key} holds no TextLine {line_id!r}: the file changed since it was listed")
            if line.problem is not None:
                raise line.problem
            cut_started = time.perf_counter()
            image = crop_line(page.scan.line, line, self.crop, self.baseline_height)
            width, height = image.size
            if min(width, height) < self.limits.min_side:
                raise ImageTooSmall(f"the line's {width}x{height} px cut from the scan: a side is under {self.limits.min_side} px")
            try:
                pixels = self.preprocess(image)
            except Exception as exc:  # a processor failing on one line is that line's problem
                raise UnreadableImage(f"preprocessing failed: {type(exc).__name__}: {exc}") from None
            notes = "; ".join((*page.scan.notes, *line.notes)) or None
            fetch = page.fetch_seconds if first else waited
            prepare = (page.decode_seconds if first else 0.0) + time.perf_counter() - cut_started
            return Prepared(key, pixels, None, notes, image.size, fetch, prepare, place)
        except LineError as exc:
            return Prepared(key, error=exc, place=place)
        finally:
            self._done(layout_key)

    def _page(self, layout_key: str) -> _Page:
        with self._lock:
            return self._pages.setdefault(layout_key, _Page())

    def _done(self, layout_key: str) -> None:
        """One more line of the page is cut; after the shard's last one the page is let go."""
        with self._lock:
            self._left[layout_key] -= 1
            if self._left[layout_key] <= 0:
                self._pages.pop(layout_key, None)

    def _load(self, layout_key: str, page: _Page) -> None:
        """Read and parse the XML, then read and decode its scan; a line-level problem is kept as the page's error."""
        started = time.perf_counter()
        try:
            layout = read_layout(self.storage.read(layout_key), layout_key)
            page.layout, page.lines = layout, {line.line_id: line for line in layout.lines}
            page.image_key = scan_key(layout_key, layout.image)
            data = self.storage.read(page.image_key)
            fetched = time.perf_counter()
            page.scan = decode_line(data, self.limits)
            page.fetch_seconds, page.decode_seconds = fetched - started, time.perf_counter() - fetched
        except LineError as exc:
            page.error = exc
