"""Line sources: what a campaign reads, chosen once, from its ``layout``, by ``line_source``.

Each kind of input is one module whose class answers the same few questions:

- which listed keys are its inputs (``is_input_key``), and how a page of listed keys becomes shards
  of line keys (``add_listed``): the producer's listing and manifests ask;
- how a shard's line key becomes the line's pixels and its place on a page (``preparer``): the
  worker asks;
- where a line sits (``page_and_line``), whether its results can be written back into the files it
  read (``writes_back``) and whether those files may hold ground truth (``ground_truth_inside``):
  the exports and `pisar eval` ask.

``line_images.py`` (a key is a line image), ``page_lines.py`` (PAGE/ALTO files and their scans)
and ``detected_pages.py`` (scans whose lines are detected first) today. A new kind (IIIF canvases) is a new module and one entry in
``_SOURCES``; nothing that uses a source compares its name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from sqlalchemy import Connection

from pisar.catalog.models import SourceKind
from pisar.errors import ConfigError
from pisar.sources.detected_pages import DetectedPages
from pisar.sources.line_images import LineImages
from pisar.sources.page_lines import PageLines
from pisar.sources.prepared import Cutting, LinePlace, Prepared, PrepareImage
from pisar.storage import KeySource, Storage


class LineSource(Protocol):
    """The questions every kind of input answers (the module docstring)."""

    describes: str  # what it reads, for messages: "line images"
    writes_back: bool
    ground_truth_inside: bool
    detects: bool  # its lines are found by a detector after listing (``pisar/catalog/pages.py``)
    default_crop: str  # how its page lines are cut unless --crop says (``pisar/page_crop.py``)

    def page_and_line(self, key: str) -> tuple[str | None, str | None]: ...

    def is_input_key(self, key: str) -> bool: ...

    def add_listed(
        self, storage: KeySource, keys: Iterable[str], carry: list[str], shard_size: int, skipped: Counter[str]
    ) -> tuple[list[list[str]], list[str]]: ...

    def write_listed(self, conn: Connection, campaign_id: int, first_index: int, listed: list[list[str]]) -> None: ...

    def preparer(self, storage: Storage, keys: list[str], preprocess: PrepareImage, cutting: Cutting) -> Callable[[str], Prepared]: ...


_SOURCES: dict[SourceKind, LineSource] = {
    SourceKind.LINE_IMAGES: LineImages(),
    SourceKind.PAGE_LINES: PageLines(),
    SourceKind.DETECTED_PAGES: DetectedPages(),
}


def line_source(kind: str | SourceKind) -> LineSource:
    """The source of a campaign's ``layout``: the one place a layout's name decides anything."""
    try:
        return _SOURCES[SourceKind(kind)]
    except ValueError:
        raise ConfigError(f"--layout must be one of {', '.join(SourceKind)}, not {kind!r}") from None


__all__ = ["Cutting", "LinePlace", "LineSource", "Prepared", "SourceKind", "line_source"]
