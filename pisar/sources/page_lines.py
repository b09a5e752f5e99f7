"""Lines of segmented page scans: PAGE/ALTO files listed, each TextLine a line cut from its page's scan.

Listing. The lister thread that lists a layout file reads and parses it (``pisar.layout``: no
entities, no DTDs, a size limit), so the catalog knows every line before a worker starts, and
`status`, `retry` and `export` count lines, not pages. A file that cannot be read as a layout
(broken XML, neither PAGE nor ALTO, gone between the listing and the read) becomes one line keyed
``<layout key>#`` whose worker records why, so a bad page is a recorded outcome, not a failed
listing; an outage still stops the listing, which resumes. A layout without any TextLine adds no
line and is counted among the skipped files. A page's lines stay in one shard unless the page
alone holds more than a shard: then it fills whole shards and its rest starts the next one. So a
worker reads each scan once per shard.

Reading. A page campaign's line key is ``<layout key>#<line id>`` (``pisar.layout.line_key``): the
XML's key in the source, then the ``TextLine`` id. The fetch pool prepares a shard's lines in parallel and in key order, so the lines of one page
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

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pisar.errors import ImageTooSmall, LineError, LineNotInLayout, UnreadableImage
from pisar.images import DecodedLine, ImageLimits, decode_line
from pisar.layout import LayoutLine, PageLayout, fitted_to, is_layout_key, line_key, read_layout, split_line_key
from pisar.page_crop import crop_line
from pisar.sources.line_images import LineImages
from pisar.sources.prepared import Cutting, LinePlace, Prepared, PrepareImage
from pisar.storage import KeySource, Storage, is_storable_key, skip_reason, skipped_label

NO_LINES = "(a layout without lines)"


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


class ShardPages:
    """The ``prepare`` of a page campaign's shard: each key's line cut from its page's scan and preprocessed."""

    def __init__(
        self,
        storage: Storage,
        limits: ImageLimits,
        preprocess: PrepareImage,
        keys: Iterable[str],
        crop: str = "polygon",
        baseline_height: int = 60,
        read_layout_file: Callable[[str], bytes] | None = None,
        scan_of: Callable[[str, PageLayout], tuple[str, int]] | None = None,
    ) -> None:
        self.storage, self.limits, self.preprocess = storage, limits, preprocess
        self.read_layout_file = read_layout_file or storage.read  # detected pages: the layout the catalog holds
        # (the scan's key, its frame) for a layout: the file the XML names; a detected page's own key and frame
        self.scan_of = scan_of or (lambda layout_key, layout: (storage.scan_for(layout_key, layout.image), 0))
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

    @property
    def pages_in_memory(self) -> int:
        """Pages whose XML and scan are held: only those with lines still to cut in this shard."""
        with self._lock:
            return len(self._pages)

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
            layout = read_layout(self.read_layout_file(layout_key), layout_key)
            page.layout, page.lines = layout, {line.line_id: line for line in layout.lines}
            file_key, frame = self.scan_of(layout_key, layout)
            page.image_key = file_key if not frame else layout_key  # a page of a multi-page file is placed by its own key
            data = self.storage.read(file_key)
            fetched = time.perf_counter()
            page.scan = decode_line(data, self.limits, frame)
            page.layout = layout = fitted_to(layout, *page.scan.line.size)
            page.lines = {line.line_id: line for line in layout.lines}
            page.fetch_seconds, page.decode_seconds = fetched - started, time.perf_counter() - fetched
        except LineError as exc:
            page.error = exc


def page_line_keys(storage: KeySource, key: str) -> list[str]:
    """The catalog keys of the layout file ``key``'s TextLines, in reading order; ``[key#]`` when it cannot be read."""
    try:
        layout = read_layout(storage.read(key), key)
    except LineError:
        return [line_key(key, "")]
    return [line_key(key, line.line_id) for line in layout.lines]


def add_pages(
    storage: KeySource, keys: Iterable[str], carry: list[str], shard_size: int, skipped: Counter[str]
) -> tuple[list[list[str]], list[str]]:
    """The listed ``keys``' layout files as lines added to ``carry``: the full shards made, and the new carry."""
    ready: list[list[str]] = []
    for key in keys:
        if not is_storable_key(key) or not is_layout_key(key):
            skipped[skip_reason(key) or skipped_label(key)] += 1  # a scan: read through its layout, counted as skipped
            continue
        lines = page_line_keys(storage, key)
        if not lines:
            skipped[NO_LINES] += 1
            continue
        if carry and len(carry) + len(lines) > shard_size:  # the page would straddle two shards: it starts the next
            ready.append(carry)
            carry = []
        carry = carry + lines
        while len(carry) >= shard_size:  # full, or a page larger than a shard
            ready.append(carry[:shard_size])
            carry = carry[shard_size:]
    return ready, carry


class PageLines:
    """PAGE/ALTO files and their scans: a layout file lists its TextLines, a line is ``<layout key>#<line id>``."""

    describes = "TextLines in PAGE/ALTO files"
    writes_back = True  # the results go back into the same files (``pisar export --format page|alto``)
    ground_truth_inside = True  # a TextLine's TextEquiv / String CONTENT, when a person transcribed it
    detects = False
    default_crop = "polygon"  # an archive's polygons are drawn around the text, ascenders and descenders included
    write_listed = staticmethod(LineImages.write_listed)

    @staticmethod
    def page_and_line(key: str) -> tuple[str | None, str | None]:
        """The layout file's key and the TextLine id (``""`` for a page whose file could not be read)."""
        return split_line_key(key)

    @staticmethod
    def is_input_key(key: str) -> bool:
        return is_layout_key(key)

    add_listed = staticmethod(add_pages)

    @staticmethod
    def preparer(storage: Storage, keys: list[str], preprocess: PrepareImage, cutting: Cutting) -> Callable[[str], Prepared]:
        """Each of a shard's ``keys`` cut from its page's scan, each layout and scan read once for the shard."""
        return ShardPages(storage, cutting.limits, preprocess, keys, cutting.crop, cutting.baseline_height).prepare
