"""Where line images live: S3-compatible buckets and local folders behind one small interface.

Keys are data, never paths: a local key is resolved under the root and refused if it escapes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from pisar.constants import IMAGE_SUFFIXES
from pisar.errors import ConfigError, FetchFailed, MissingObject, NotFound, ServiceUnavailable, TransientError
from pisar.settings import Settings

if TYPE_CHECKING:
    import boto3


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


class Storage(Protocol):
    """Lists keys under a root and reads one object's bytes."""

    url: str

    def iter_keys(self) -> Iterator[str]: ...

    def read(self, key: str) -> bytes: ...

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        """Disjoint ranges that together hold every key, about ``wanted`` of them where the layout allows."""
        ...

    def list_range(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        """The keys of ``part`` greater than ``after``, in byte order, a page at a time."""
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


def _runs(parent: str, folders: list[str], count: int) -> list[KeyRange]:
    """``folders`` of ``parent`` cut into ``count`` runs of consecutive folders."""
    size = -(-len(folders) // count)
    return [KeyRange(parent, folders=tuple(folders[i : i + size])) for i in range(0, len(folders), size)]


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


# Error codes that mean "try again later" whatever their HTTP status (botocore's own throttling list).
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable"}
)


class S3Storage:
    """A bucket and prefix on any S3-compatible server: reads and listings through obstore, off the
    GIL (``pisar/s3_fast.py``), and through one thread-safe boto3 client where obstore cannot go."""

    def __init__(self, bucket: str, prefix: str, settings: Settings, page_size: int = 1000) -> None:
        import boto3

        from pisar import s3_fast

        self.bucket = bucket
        self.prefix = prefix
        self.page_size = page_size
        self.url = f"s3://{bucket}/{prefix}"
        session = boto3.session.Session()
        self.client = make_s3_client(settings, session)
        self.store = s3_fast.open_store(bucket, settings, session) if settings.s3_client == "obstore" else None

    def iter_keys(self) -> Iterator[str]:
        for page in self.list_range(KeyRange(self.prefix), None):
            yield from page

    def key_ranges(self, wanted: int, max_depth: int = 4, flat_after: int = 10_000) -> list[KeyRange]:
        """Split the prefix by its sub-folders ("common prefixes"), breadth first, until about
        ``wanted`` ranges or ``max_depth`` levels; a level that would give far more than ``wanted``
        is cut into ``wanted`` runs of consecutive sub-folders instead. A level with more than
        ``flat_after`` objects of its own is listed whole by one range: a flat prefix cannot be
        split by folders, and probing it further would cost as much as listing it.
        """
        ranges: list[KeyRange] = []
        frontier = [self.prefix]
        for _ in range(max_depth):
            if not frontier or len(ranges) + len(frontier) >= wanted:
                break
            levels: list[tuple[str, list[str]]] = []
            for prefix in frontier:
                folders, objects = self._level(prefix, flat_after)
                if objects > flat_after:
                    ranges.append(KeyRange(prefix))
                    continue
                if objects:
                    ranges.append(KeyRange(prefix, recursive=False))
                levels.append((prefix, folders))
            found = sum(len(folders) for _, folders in levels)
            room = wanted - len(ranges)
            if found > room:  # one level more is too many ranges: runs of folders instead, and stop
                ranges.extend(
                    run for parent, folders in levels if folders for run in _runs(parent, folders, max(1, room * len(folders) // found))
                )
                frontier = []
                break
            frontier = [folder for _, folders in levels for folder in folders]
        ranges.extend(KeyRange(prefix) for prefix in frontier)
        return sorted(ranges, key=lambda r: (r.folders[0] if r.folders else r.prefix, r.recursive))

    def _level(self, prefix: str, flat_after: int) -> tuple[list[str], int]:
        """Sub-folders directly under ``prefix`` and how many objects lie beside them (counted up to ``flat_after`` + 1)."""
        folders: list[str] = []
        objects = 0
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
            objects += len(page.get("Contents", []))
            if objects > flat_after:
                break
        return folders, objects

    def list_range(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        if part.folders:
            yield from self._list_run(part, after)
        elif part.recursive:
            yield from self._keys(part.prefix, after)
        else:  # the objects beside the sub-folders: one delimited listing
            options = {"Prefix": part.prefix, "Delimiter": "/"} | ({"StartAfter": after} if after is not None else {})
            for page in self._pages(**options):
                if keys := [item["Key"] for item in page.get("Contents", [])]:
                    yield keys

    def _keys(self, prefix: str, after: str | None) -> Iterator[list[str]]:
        """Every key under ``prefix`` greater than ``after``, a page at a time: obstore for a listing
        from the start of a prefix it lists as S3 would, boto3 from the last key it gave where it
        stops (a key it cannot name, an error) and for a resumed listing. ``after`` is a key S3's
        StartAfter and object_store's offset treat alike only on some servers (SeaweedFS lists
        folder by folder and reads it as a folder cursor), so resuming stays with boto3."""
        from pisar import s3_fast

        def boto3_keys(last: str | None) -> Iterator[list[str]]:
            for page in self._pages(Prefix=prefix, **({"StartAfter": last} if last is not None else {})):
                if keys := [item["Key"] for item in page.get("Contents", [])]:
                    yield keys

        if self.store is not None and after is None and s3_fast.lists_alike(prefix):
            yield from self._obstore_first([prefix], boto3_keys)
        else:
            yield from boto3_keys(after)

    def _list_run(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        """A run of sibling folders: fresh, each folder listed whole by obstore, in the run's order
        (the order its folders came in, which is the order a server lists their keys); resumed, or
        from where obstore stops, one boto3 listing of the parent (``_list_run_boto3``)."""
        if self.store is not None and after is None:
            yield from self._obstore_first(part.folders, lambda last: self._list_run_boto3(part, last))
        else:
            yield from self._list_run_boto3(part, after)

    def _obstore_first(self, prefixes: Iterable[str], then: Callable[[str | None], Iterator[list[str]]]) -> Iterator[list[str]]:
        """obstore's pages of each of ``prefixes`` in turn, whole; where it stops (a key it cannot
        name, an error), ``then`` from the last key it gave, so no key is lost or given twice."""
        from pisar import s3_fast

        last = None
        try:
            for prefix in prefixes:
                for keys in s3_fast.list_pages(self.store, prefix):
                    last = keys[-1]
                    yield keys
            return
        except s3_fast.failures():
            pass
        yield from then(last)

    def _list_run_boto3(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        """One listing of the parent from the run's first folder, to the first key of a folder not
        in the run. It relies only on a server listing keys in the order it lists their folders
        (AWS: bytes; SeaweedFS: folder by folder); the parent's own objects, met on the way, are skipped."""
        run = set(part.folders)
        for page in self._pages(Prefix=part.prefix, StartAfter=after or part.folders[0]):
            keys = []
            for item in page.get("Contents", []):
                key = item["Key"]
                folder, slash, _ = key[len(part.prefix) :].partition("/")
                if not slash:
                    continue  # an object beside the folders: the parent's own range lists it
                if part.prefix + folder + "/" not in run:
                    if keys:
                        yield keys
                    return
                keys.append(key)
            if keys:
                yield keys

    def _pages(self, **options: str) -> Iterator[dict]:
        """ListObjectsV2 pages, with storage errors as one readable Pisar error."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, PaginationConfig={"PageSize": self.page_size}, **options)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise NotFound(f"bucket {self.bucket!r} does not exist at {self.client.meta.endpoint_url}") from None
            raise ServiceUnavailable(f"listing {self.url}: {code or exc}") from None
        except NoCredentialsError:
            raise ConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)") from None
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"listing {self.url}: {exc}") from None

    def read(self, key: str) -> bytes:
        if self.store is not None:
            from pisar import s3_fast

            data = s3_fast.read(self.store, key)
            if data is not None:
                return data
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObject(f"s3://{self.bucket}/{key} does not exist") from None
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES:
                # Throttling and server errors outlived botocore's retries: the shard retries later.
                raise TransientError(f"s3://{self.bucket}/{key}: {code or exc}") from None
            # Any other refusal (access denied, archived, a key the server calls invalid) is this
            # line's, and the same next time: recorded, never a shard that stalls forever.
            raise FetchFailed(f"s3://{self.bucket}/{key}: {code or status}") from None
        except BotoCoreError as exc:
            raise TransientError(f"s3://{self.bucket}/{key}: {exc}") from None


def make_s3_client(settings: Settings, session: boto3.session.Session | None = None):  # boto3 client types are generated
    """A boto3 S3 client with botocore's ``standard`` retries and a pool sized for the fetch threads."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        s3={"addressing_style": settings.s3_addressing_style},
        max_pool_connections=max(10, settings.fetch_threads, settings.list_threads),
        connect_timeout=10,
        read_timeout=60,
    )
    return (session or boto3.session.Session()).client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); anything else is a ``ConfigError``."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise ConfigError(f"bad S3 URL {url!r}: expected s3://bucket/prefix")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket):
        raise ConfigError(f"bad S3 URL {url!r}: {bucket!r} is not a valid bucket name")
    return bucket, parsed.path.lstrip("/")


def open_storage(url: str, settings: Settings) -> Storage:
    """Open an ``s3://bucket/prefix`` URL, a ``file://`` URL or a plain folder path."""
    if url.startswith("s3:"):
        bucket, prefix = parse_s3_url(url)
        return S3Storage(bucket, prefix, settings)
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported source {url!r}: use a folder path or s3://bucket/prefix")
    return LocalStorage(Path(url.removeprefix("file://")))
