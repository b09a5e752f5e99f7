"""What a line source hands the reader: one line's pixels ready for the model, or why it cannot be."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pisar.errors import LineError
from pisar.images import ImageLimits

#: A reader's preprocessing: one decoded line image to model input (``LineReader.prepare``).
PrepareImage = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class LinePlace:
    """Where a page campaign's line sits on its page: recorded with its result, whatever the result
    (the fields are ``LineResult``'s of the same names)."""

    region_id: str | None
    image: str
    reading_order: int


@dataclass
class Prepared:
    """One line ready for the model, or the reason it cannot be."""

    key: str
    pixels: np.ndarray | None = None
    error: LineError | None = None
    note: str | None = None  # how the file was read, when not as it is (``DecodedLine.note``)
    size: tuple[int, int] | None = None  # (width, height) of the decoded line
    fetch_seconds: float = 0.0  # reading the bytes
    preprocess_seconds: float = 0.0  # decoding and preprocessing them
    place: LinePlace | None = None  # a page line's region, scan and reading order (``page_lines.py``)

    @property
    def width_ratio(self) -> float:
        """Width over height: a proxy for the line's text length, by which batches are grouped."""
        return self.size[0] / self.size[1] if self.size else 0.0


@dataclass(frozen=True)
class Cutting:
    """How a shard's lines are made from what the source holds: the image limits every decode
    keeps to, and for page lines the crop (``pisar/page_crop.py``) and the height of a line known
    only by its baseline."""

    limits: ImageLimits
    crop: str = "polygon"
    baseline_height: int = 60
    # Detected pages: the layouts the catalog holds for some scans' keys (``pisar.catalog.pages.stored_layouts``).
    stored_layouts: Callable[[Iterable[str]], dict[str, bytes]] | None = None
