"""Line images: every listed image is one line, read as it is (the first kind of input Pisar read)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from sqlalchemy import Connection

from pisar.catalog import shards
from pisar.catalog.bulk import insert_pending_lines
from pisar.errors import LineError, UnreadableImage
from pisar.images import ImageLimits, decode_line
from pisar.sources.prepared import Cutting, Prepared, PrepareImage
from pisar.storage import KeySource, Storage, is_image_key, skip_reason


def prepare_one(key: str, storage: Storage, limits: ImageLimits, preprocess: PrepareImage) -> Prepared:
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


class LineImages:
    """A folder, bucket or manifest of line images: a key is a line."""

    describes = "line images"
    writes_back = False  # nothing to write into: exports only
    ground_truth_inside = False  # ground truth lies beside an image (``*.gt.txt``), not in it
    detects = False  # its lines are known at listing
    default_crop = "polygon"  # (line images are not cut)

    @staticmethod
    def page_and_line(key: str) -> tuple[str | None, str | None]:
        return None, None  # a line image is on no page Pisar knows

    @staticmethod
    def is_input_key(key: str) -> bool:
        return is_image_key(key)

    @staticmethod
    def add_listed(
        storage: KeySource, keys: Iterable[str], carry: list[str], shard_size: int, skipped: Counter[str]
    ) -> tuple[list[list[str]], list[str]]:
        """Listed keys as lines: each image kept (others counted as skipped), full shards cut off the carry."""
        for key in keys:
            reason = skip_reason(key)
            if reason is None:
                carry.append(key)
            else:
                skipped[reason] += 1
        full = len(carry) - len(carry) % shard_size
        return [carry[i : i + shard_size] for i in range(0, full, shard_size)], carry[full:]

    @staticmethod
    def write_listed(conn: Connection, campaign_id: int, first_index: int, listed: list[list[str]]) -> None:
        """Listed shards of line keys as pending shards with their pending lines (the caller's transaction)."""
        ids = shards.insert_listed(conn, campaign_id, first_index, [len(keys) for keys in listed])
        insert_pending_lines(conn, campaign_id, ((shard_id, key) for shard_id, keys in zip(ids, listed, strict=True) for key in keys))

    @staticmethod
    def preparer(storage: Storage, keys: list[str], preprocess: PrepareImage, cutting: Cutting) -> Callable[[str], Prepared]:
        """What makes one of a shard's ``keys`` ready for the model: the image fetched, decoded and preprocessed."""

        def prepare(key: str) -> Prepared:
            return prepare_one(key, storage, cutting.limits, preprocess)

        return prepare
