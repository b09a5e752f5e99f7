"""Page scans with no layout: each scan's lines are detected first, then read like a PAGE file's.

Listing. Every image listed is a scan to detect (``pisar/catalog/pages.py``); the listing groups
``detect_pages_per_shard`` neighbouring scans into one read shard, which waits (``detecting``) until
its scans are detected. A scan's lines are keyed ``<scan key>#<line id>``, the line ids given by the
detector in reading order (``l1``, ``l2``, ...).

Multi-page files. A TIFF (or any multi-frame image) is listed once, as its first page; detecting
it finds how many pages it holds and adds one scan per further page, keyed ``<file key>#p2``,
``#p3``, ... (``page_key``), to the same read shard, each detected as its own unit of work. No
listed key ends so (``#p2`` is no image suffix), so a page's key names its file and frame without
doubt (``scan_frame``).

Reading. A detected scan's layout is the PAGE XML the catalog stores for it, read by
``ShardPages`` exactly as a PAGE file from the archive: the scan fetched and decoded once per
shard, each line cut by its polygon. A scan whose detection failed has one error line ``<scan>#``,
written by the detection and never read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable

from sqlalchemy import Connection

from pisar.catalog import pages, shards
from pisar.errors import UnreadableLayout
from pisar.layout import split_line_key
from pisar.sources.line_images import LineImages
from pisar.sources.page_lines import ShardPages
from pisar.sources.prepared import Cutting, Prepared, PrepareImage
from pisar.storage import KeySource, Storage

_FRAME = re.compile(r"^(?P<file>.+)#p(?P<page>[2-9]|[1-9]\d+)$")


def page_key(file_key: str, page: int) -> str:
    """The scan key of page ``page`` (1-based) of a multi-page file: the file's own key for the first."""
    return file_key if page == 1 else f"{file_key}#p{page}"


def scan_frame(key: str) -> tuple[str, int]:
    """(the file's key, the 0-based frame) of a scan key."""
    match = _FRAME.match(key)
    return (match["file"], int(match["page"]) - 1) if match else (key, 0)


class DetectedPages:
    """Scans whose lines Pisar detects (``pisar/detect``) before it reads them."""

    describes = "page scans to detect lines in"
    writes_back = True  # into the layouts detected for its scans, kept in the catalog (producer/detected_layouts.py)
    ground_truth_inside = False
    detects = True
    # blla's polygons hug the text and cut into ascenders and descenders: on 24 held-out print lines
    # pasted onto pages, the demo model reads box cuts at CER 0.122 (the line images: 0.115) and
    # polygon cuts at 0.168 (tests/test_detect_blla.py; docs/performance.md).
    default_crop = "box"

    @staticmethod
    def page_and_line(key: str) -> tuple[str | None, str | None]:
        return split_line_key(key)

    is_input_key = staticmethod(LineImages.is_input_key)

    @staticmethod
    def add_listed(
        storage: KeySource, keys: Iterable[str], carry: list[str], shard_size: int, skipped: Counter[str]
    ) -> tuple[list[list[str]], list[str]]:
        """Listed images as scans, ``shard_size`` of them to a shard (``detect_pages_per_shard``)."""
        return LineImages.add_listed(storage, keys, carry, shard_size, skipped)

    @staticmethod
    def write_listed(conn: Connection, campaign_id: int, first_index: int, listed: list[list[str]]) -> None:
        """A shard per group of scans, waiting for their lines, and the scans to detect."""
        ids = shards.insert_detecting(conn, campaign_id, first_index, len(listed))
        pages.insert_listed(conn, campaign_id, ((shard_id, key) for shard_id, keys in zip(ids, listed, strict=True) for key in keys))

    @staticmethod
    def preparer(storage: Storage, keys: list[str], preprocess: PrepareImage, cutting: Cutting) -> Callable[[str], Prepared]:
        """Each of a shard's line keys cut from its scan by the layout detected for it."""
        if cutting.stored_layouts is None:
            raise ValueError("a detect campaign's shard is read with the catalog's layouts (Cutting.stored_layouts)")
        layouts = cutting.stored_layouts(split_line_key(key)[0] for key in keys)

        def layout_of(scan_key: str) -> bytes:
            if scan_key not in layouts:
                raise UnreadableLayout(f"{scan_key}: the catalog holds no detected layout for this scan")
            return layouts[scan_key]

        return ShardPages(
            storage, cutting.limits, preprocess, keys, cutting.crop, cutting.baseline_height, layout_of, lambda key, _: scan_frame(key)
        ).prepare
