"""The input side of a shard: fetch, decode and preprocess in a thread pool, in order, ahead of the GPU.

A bounded window of futures keeps ``window`` lines in flight, so the pool works on the next
batches while the main thread runs ``generate`` on the current one, and memory stays bounded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pisar.errors import LineError, UnreadableImage
from pisar.images import ImageLimits, decode_line
from pisar.storage import Storage


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
    place: LinePlace | None = None  # a page line's region, scan and reading order (worker/page_lines.py)

    @property
    def width_ratio(self) -> float:
        """Width over height: a proxy for the line's text length, by which batches are grouped."""
        return self.size[0] / self.size[1] if self.size else 0.0


def prepare_one(key: str, storage: Storage, limits: ImageLimits, preprocess: Callable[[Image.Image], np.ndarray]) -> Prepared:
    """Fetch, decode and preprocess one key; line-level problems are returned, not raised."""
    started = time.perf_counter()
    try:
        data = storage.read(key)
        fetched = time.perf_counter()
        decoded = decode_line(data, limits)
        try:
            pixels = preprocess(decoded.line)
            done = time.perf_counter()
            return Prepared(key, pixels, None, decoded.note, decoded.line.size, fetched - started, done - fetched)
        except Exception as exc:  # a processor failing on one image is that line's problem
            raise UnreadableImage(f"preprocessing failed: {type(exc).__name__}: {exc}") from None
    except LineError as exc:
        return Prepared(key, error=exc)


def prepare_lines(
    keys: Iterable[str],
    prepare: Callable[[str], Prepared],
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[Prepared]:
    """Yield ``prepare(key)`` for each key in order, keeping up to ``window`` in flight.

    Exceptions other than ``LineError`` (a storage outage, say) propagate and fail the shard.
    """
    pending: deque[Future[Prepared]] = deque()
    iterator = iter(keys)
    try:
        for key in iterator:
            pending.append(pool.submit(prepare, key))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            next_key = next(iterator, None)
            if next_key is not None:
                pending.append(pool.submit(prepare, next_key))
            yield result
    finally:
        for future in pending:
            future.cancel()
