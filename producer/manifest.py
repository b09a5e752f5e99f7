"""A campaign's keys from a manifest file instead of a listing: `pisar submit SOURCE --manifest FILE`.

Archives often already hold the list (a catalogue export, a previous run, a selection), and a
listing of a huge bucket costs an hour before the first line is read. Formats, by suffix:
- ``.txt`` / ``.lst`` (optionally ``.gz``): one key per line, as stored (spaces kept; blank lines skipped);
- ``.csv`` (optionally ``.gz``): the ``key`` column of a header row;
- ``.parquet``: the ``key`` column;
- an S3 Inventory report's ``manifest.json`` (local or ``s3://``; CSV, Parquet or ORC data
  files, read from its destination bucket and checked against their MD5). CSV inventories
  URL-encode keys with a space as ``+`` (decoded with ``unquote_plus``: cloud-custodian #1997);
  Parquet and ORC hold them as they are. Delete markers and versions that are not the latest are
  left out, so a versioned inventory gives each current object once.

A page campaign (``--layout xml``) takes the manifest's PAGE/ALTO files (``.xml``) instead, and
reads each as a listing would. Keys are the same as a listing of SOURCE gives: for ``s3://bucket/prefix`` the full object key
(it must start with the prefix), for a folder the path relative to it. Non-image keys, keys that
are not storable text, keys outside the source and repeats are counted as skipped, exactly as a
listing counts them. Keys are not checked for existence here: a missing object becomes that line's
``MissingObject`` error when a worker reads it.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from pisar.errors import ConfigError
from pisar.storage import UNSTORABLE_KEY, KeyRange, Listing, Storage, is_image_key, is_storable_key, parse_s3_url, skipped_label

OUTSIDE = "(outside the source)"
REPEATED = "(repeated in the manifest)"


def read_manifest(
    manifest: str | Path, prefix: str = "", storage: Storage | None = None, wanted: Callable[[str], bool] = is_image_key
) -> Listing:
    """The sorted, unique ``wanted`` keys of ``manifest`` that lie under ``prefix``, and what was skipped.

    ``storage`` is the campaign's source: an S3 Inventory must be of its bucket, and is read
    with its client. ``wanted``: line images, or a page campaign's PAGE/ALTO files (``is_layout_key``).
    """
    text = str(manifest)
    if text.endswith("manifest.json"):
        source = _inventory_keys(text, storage)
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"manifest {path} is not a file")
        source = _keys(path)
    keys: set[str] = set()
    skipped: Counter[str] = Counter()
    for key in source:
        if not is_storable_key(key):
            skipped[UNSTORABLE_KEY] += 1
        elif not key.startswith(prefix):
            skipped[OUTSIDE] += 1
        elif not wanted(key):
            skipped[skipped_label(key)] += 1
        elif key in keys:
            skipped[REPEATED] += 1
        else:
            keys.add(key)
    return Listing(keys=sorted(keys), skipped=skipped)


class ManifestKeys:
    """A manifest's sorted keys as a ``KeySource`` for ``producer/listing.py``: one key range,
    paged, resumable after any key. Its skipped counts are added to the campaign's when it is written.
    A page campaign's listing reads each layout file as it is listed: ``read`` is the source's."""

    def __init__(self, listing: Listing, storage: Storage | None = None, page_size: int = 1000) -> None:
        self.listing = listing
        self.storage = storage
        self.page_size = page_size

    @property
    def skipped_up_front(self) -> dict[str, int]:
        """The manifest's keys that are not inputs, by label: counted with the campaign's skipped files."""
        return dict(self.listing.skipped)

    def read(self, key: str) -> bytes:
        if self.storage is None:
            raise TypeError("a manifest without its source storage cannot read objects")
        return self.storage.read(key)

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


def _inventory_keys(manifest: str, storage: Storage | None) -> Iterator[str]:
    """The current objects' keys of an S3 Inventory report, file by file."""
    client = getattr(storage, "client", None)
    bucket = getattr(storage, "bucket", None)
    if client is None:
        raise ConfigError("an S3 Inventory manifest needs an s3:// source (its keys are of that bucket)")
    described = json.loads(_read(manifest, client))
    if described.get("sourceBucket") != bucket:
        raise ConfigError(f"inventory {manifest} is of bucket {described.get('sourceBucket')!r}, not of the source's {bucket!r}")
    destination = str(described.get("destinationBucket", "")).removeprefix("arn:aws:s3:::")
    kind = str(described.get("fileFormat", "")).upper()
    if kind not in ("CSV", "PARQUET", "ORC"):
        raise ConfigError(f"inventory {manifest}: file format {kind or '(none)'} is not CSV, Parquet or ORC")
    for entry in described.get("files", []):
        data = client.get_object(Bucket=destination, Key=entry["key"])["Body"].read()
        if entry.get("MD5checksum") and hashlib.md5(data).hexdigest() != entry["MD5checksum"]:  # S3's own checksum
            raise ConfigError(f"inventory file s3://{destination}/{entry['key']} does not match its MD5 in {manifest}")
        if kind == "CSV":
            yield from _inventory_csv(data, described.get("fileSchema", ""))
        else:
            yield from _inventory_columns(data, kind)


def _inventory_csv(data: bytes, schema: str) -> Iterator[str]:
    """Rows of a gzipped, headerless inventory CSV whose columns ``fileSchema`` names."""
    columns = [c.strip() for c in schema.split(",")]
    if "Key" not in columns:
        raise ConfigError(f"inventory fileSchema has no Key column: {schema!r}")
    key, latest, marker = (columns.index(c) if c in columns else None for c in ("Key", "IsLatest", "IsDeleteMarker"))
    with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="utf-8", newline="") as text:
        for row in csv.reader(text):
            if (latest is not None and row[latest] == "false") or (marker is not None and row[marker] == "true"):
                continue
            yield unquote_plus(row[key])


def _inventory_columns(data: bytes, kind: str) -> Iterator[str]:
    """Keys of a Parquet or ORC inventory file (columns ``key``, ``is_latest``, ``is_delete_marker``)."""
    table: Any
    if kind == "PARQUET":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
    else:
        import pyarrow.orc as orc

        table = orc.ORCFile(io.BytesIO(data)).read()
    names = table.column_names
    keys = table.column("key").to_pylist()
    latest = table.column("is_latest").to_pylist() if "is_latest" in names else [True] * len(keys)
    marker = table.column("is_delete_marker").to_pylist() if "is_delete_marker" in names else [False] * len(keys)
    yield from (k for k, is_latest, is_marker in zip(keys, latest, marker, strict=True) if is_latest is not False and not is_marker)


def _read(location: str, client: Any) -> bytes:
    """A local file, or an ``s3://`` object through the source's client."""
    if location.startswith("s3://"):
        bucket, key = parse_s3_url(location)
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    path = Path(location)
    if not path.is_file():
        raise ConfigError(f"manifest {path} is not a file")
    return path.read_bytes()
