"""Where line images live: S3-compatible buckets (``pisar/s3_storage.py``) and local folders behind one small interface.

Keys are data, never paths: a local key is resolved under the root and refused if it escapes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Protocol
from urllib.parse import urlparse

from pisar.constants import IMAGE_SUFFIXES
from pisar.errors import ConfigError, FetchFailed, MissingObject, NotFound
from pisar.layout import scan_key
from pisar.settings import Settings


@dataclass(frozen=True)
class KeyRange:
    """One part of a listing that a thread lists on its own: the keys under ``prefix``, all of them
    (``recursive``) or only those directly at that level (the objects beside its sub-folders).

    With ``folders``, instead the keys of that run of consecutive sub-folders of ``prefix``. A
    level of many small folders (page folders of 30 lines) then makes a few ranges of full shards
    rather than thousands of 30-line shards (listed a folder at a time through obstore, or with as
    few requests as one paginator through boto3).
    """

    prefix: str
    recursive: bool = True
    folders: tuple[str, ...] = ()


#: No key was set aside before a listing began.
NOTHING_SKIPPED: Mapping[str, int] = MappingProxyType({})


class KeySource(Protocol):
    """What a campaign's keys are listed from (``producer/listing.py``): a storage's own listing, or
    a manifest's keys read through the storage (``producer/manifest.py: ManifestKeys``)."""

    skipped_up_front: Mapping[str, int]  # keys set aside before the listing began (a manifest's), by label

    def read(self, key: str) -> bytes: ...

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        """Disjoint ranges that together hold every key, about ``wanted`` of them where the layout allows."""
        ...

    def list_range(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        """The keys of ``part`` greater than ``after``, in byte order, a page at a time."""
        ...


class Storage(KeySource, Protocol):
    """Lists keys under a root and reads one object's bytes."""

    url: str
    prefix: str  # the keys' common start: an S3 prefix, "" for a folder (its keys are relative to it)

    def iter_keys(self) -> Iterator[str]: ...

    def scan_for(self, layout_key: str, named: str) -> str:
        """The key of the scan a layout file names (``named``: its imageFilename / fileName)."""
        ...


@dataclass
class Listing:
    """Sorted image keys plus a count of what was skipped, by suffix."""

    keys: list[str]
    skipped: Counter[str] = field(default_factory=Counter)

    def describe_skipped(self) -> str:
        return describe_skipped(self.skipped)


def describe_skipped(skipped: Counter[str]) -> str:
    """``"2 .gt.txt, 1 (no suffix)"`` or ``"none"``, safe to print (labels come from file names)."""
    from pisar.safe_text import printable

    return ", ".join(f"{n} {printable(label)}" for label, n in sorted(skipped.items())) or "none"


def is_image_key(key: str) -> bool:
    """True for the image suffixes Pisar reads (any case); ``*.gt.txt`` and the rest are skipped."""
    return PurePosixPath(key).suffix.lower() in IMAGE_SUFFIXES


def skipped_label(key: str) -> str:
    name = PurePosixPath(key).name.lower()
    if name.endswith(".gt.txt"):
        return ".gt.txt"
    return PurePosixPath(name).suffix or "(no suffix)"


UNSTORABLE_KEY = "(key not UTF-8 text)"


def is_storable_key(key: str) -> bool:
    """False for keys no catalog can hold as text: NUL, or a file name that is not UTF-8.

    Python hands such a file name over with surrogate escapes; Postgres refuses both. They are
    counted as skipped (``UNSTORABLE_KEY``), so one odd name never fails a whole submit.
    """
    if "\x00" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def skip_reason(key: str) -> str | None:
    """Why a listed key is not a line image (the label it is counted under), or None for an image."""
    if not is_storable_key(key):
        return UNSTORABLE_KEY
    if is_image_key(key):
        return None
    return skipped_label(key)


def list_images(storage: Storage) -> Listing:
    """List every image key under the storage root, sorted, counting skipped files (for small sources:
    all in memory; campaigns stream their listing into the catalog instead, ``producer/listing.py``)."""
    keys: list[str] = []
    skipped: Counter[str] = Counter()
    for key in storage.iter_keys():
        reason = skip_reason(key)
        if reason is None:
            keys.append(key)
        else:
            skipped[reason] += 1
    keys.sort()
    return Listing(keys=keys, skipped=skipped)


class LocalStorage:
    """A folder; keys are POSIX paths relative to it."""

    prefix = ""
    skipped_up_front = NOTHING_SKIPPED

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)
        if not self.root.is_dir():
            raise NotFound(f"source folder {root} does not exist")

    def iter_keys(self) -> Iterator[str]:
        for page in self.list_range(KeyRange(""), None):
            yield from page

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        return [KeyRange("")]  # a local walk runs at disk speed; one range keeps it simple

    def list_range(self, part: KeyRange, after: str | None, page_size: int = 1000) -> Iterator[list[str]]:
        page: list[str] = []
        for key in _walk_in_byte_order(self.root, ""):
            if after is not None and key <= after:
                continue
            page.append(key)
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    def scan_for(self, layout_key: str, named: str) -> str:
        return scan_key(layout_key, named)

    def read(self, key: str) -> bytes:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise MissingObject(f"key {key!r} points outside the source folder")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"{key} no longer exists in {self.root}") from None
        except IsADirectoryError:
            raise MissingObject(f"{key} is a directory") from None
        except OSError as exc:
            raise FetchFailed(f"reading {key}: {exc}") from None


def _walk_in_byte_order(folder: Path, prefix: str) -> Iterator[str]:
    """Relative POSIX paths of the files under ``folder`` in the order S3 would list them.

    A folder sorts as its name plus "/", so ``a.png`` comes before ``a/b.png`` exactly as the
    full keys compare; a listing can then resume after any key. Links to folders are not followed.
    """
    entries = []
    with os.scandir(folder) as found:
        for entry in found:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not is_dir and entry.is_symlink() and entry.is_dir():
                continue  # a link to a folder: not followed, as os.walk does not
            entries.append((entry.name + "/" if is_dir else entry.name, entry.name, is_dir))
    for _, name, is_dir in sorted(entries):
        if is_dir:
            yield from _walk_in_byte_order(folder / name, f"{prefix}{name}/")
        else:
            yield prefix + name


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); anything else is a ``ConfigError``."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise ConfigError(f"bad S3 URL {url!r}: expected s3://bucket/prefix")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket):
        raise ConfigError(f"bad S3 URL {url!r}: {bucket!r} is not a valid bucket name")
    return bucket, parsed.path.lstrip("/")


def open_storage(url: str, settings: Settings, campaign_id: int | None = None) -> Storage:
    """Open an ``s3://bucket/prefix`` URL, a ``file://`` URL or a plain folder path, or a IIIF source
    (a manifest URL or file, ``pisar/iiif/storage.py``: its reads need the ``campaign_id`` whose canvases it holds)."""
    from pisar.iiif.storage import IiifStorage, is_iiif_source

    if is_iiif_source(url):
        return IiifStorage(url, settings, campaign_id)
    if url.startswith("s3:"):
        from pisar.s3_storage import S3Storage  # boto3 and obstore: only for a bucket

        bucket, prefix = parse_s3_url(url)
        return S3Storage(bucket, prefix, settings)
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported source {url!r}: use a folder path, s3://bucket/prefix or a IIIF manifest URL")
    return LocalStorage(Path(url.removeprefix("file://")))


class OpenStorages:
    """A worker process's storages, opened once each: one per source, and for a IIIF source one per
    campaign (its canvases are the campaign's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open: dict[tuple[str, int], Storage] = {}

    def of(self, url: str, campaign_id: int) -> Storage:
        key = (url, campaign_id)
        if key not in self._open:
            self._open[key] = open_storage(url, self.settings, campaign_id)
        return self._open[key]
