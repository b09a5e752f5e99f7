"""A campaign's keys from a manifest file instead of a listing: `pisar submit SOURCE --manifest FILE`.

Archives often already hold the list (a catalogue export, a previous run, a selection), and a
listing of a huge bucket costs an hour before the first line is read. Formats, by suffix:
- ``.txt`` / ``.lst`` (optionally ``.gz``): one key per line, as stored (spaces kept; blank lines skipped);
- ``.csv`` (optionally ``.gz``): the ``key`` column of a header row;
- ``.parquet``: the ``key`` column.

Keys are the same as a listing of SOURCE gives: for ``s3://bucket/prefix`` the full object key
(it must start with the prefix), for a folder the path relative to it. Non-image keys, keys that
are not storable text, keys outside the source and repeats are counted as skipped, exactly as a
listing counts them. Keys are not checked for existence here: a missing object becomes that line's
``MissingObject`` error when a worker reads it.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pisar.errors import ConfigError
from pisar.storage import UNSTORABLE_KEY, KeyRange, Listing, is_image_key, is_storable_key, skipped_label

OUTSIDE = "(outside the source)"
REPEATED = "(repeated in the manifest)"


def read_manifest(path: Path, prefix: str = "") -> Listing:
    """The sorted, unique image keys of ``path`` that lie under ``prefix``, and what was skipped."""
    if not path.is_file():
        raise ConfigError(f"manifest {path} is not a file")
    keys: set[str] = set()
    skipped: Counter[str] = Counter()
    for key in _keys(path):
        if not is_storable_key(key):
            skipped[UNSTORABLE_KEY] += 1
        elif not key.startswith(prefix):
            skipped[OUTSIDE] += 1
        elif not is_image_key(key):
            skipped[skipped_label(key)] += 1
        elif key in keys:
            skipped[REPEATED] += 1
        else:
            keys.add(key)
    return Listing(keys=sorted(keys), skipped=skipped)


class ManifestKeys:
    """A manifest's sorted image keys as a listing source for ``producer/listing.py``: one key range,
    paged, resumable after any key. Its skipped counts are added to the campaign's when it is written."""

    def __init__(self, listing: Listing, page_size: int = 1000) -> None:
        self.listing = listing
        self.page_size = page_size

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        return [KeyRange("")]

    def list_range(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        keys = self.listing.keys
        start = bisect.bisect_right(keys, after) if after is not None else 0
        for i in range(start, len(keys), self.page_size):
            yield keys[i : i + self.page_size]


def _keys(path: Path) -> Iterator[str]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = suffixes[-2] if compressed and len(suffixes) > 1 else suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        yield from _parquet_keys(path)
        return
    if kind not in (".txt", ".lst", ".csv"):
        raise ConfigError(f"manifest {path.name}: use a .txt, .lst, .csv (optionally .gz) or .parquet file")
    raw = gzip.open(path, "rb") if compressed else path.open("rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") as text:
        if kind == ".csv":
            reader = csv.DictReader(text)
            if "key" not in (reader.fieldnames or ()):
                raise ConfigError(f"manifest {path.name}: no `key` column in its header ({', '.join(reader.fieldnames or ()) or 'empty'})")
            yield from (row["key"] for row in reader if row["key"])
        else:
            for line in text:
                key = line.removesuffix("\n").removesuffix("\r")
                if key:
                    yield key


def _parquet_keys(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    if "key" not in file.schema_arrow.names:
        raise ConfigError(f"manifest {path.name}: no `key` column ({', '.join(file.schema_arrow.names)})")
    for batch in file.iter_batches(columns=["key"], batch_size=100_000):
        yield from (key for key in batch.column(0).to_pylist() if key)
