"""An S3-compatible bucket as a ``Storage``: reads and listings through obstore, boto3 where obstore cannot go."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pisar.errors import ConfigError, FetchFailed, MissingObject, NotFound, ServiceUnavailable, TransientError
from pisar.layout import scan_key
from pisar.settings import Settings
from pisar.storage import NOTHING_SKIPPED, KeyRange

if TYPE_CHECKING:
    import boto3


# Error codes that mean "try again later" whatever their HTTP status (botocore's own throttling list).
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable"}
)


class S3Storage:
    """A bucket and prefix on any S3-compatible server: reads and listings through obstore, off the
    GIL (``pisar/s3_fast.py``), and through one thread-safe boto3 client where obstore cannot go."""

    skipped_up_front = NOTHING_SKIPPED

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

    def scan_for(self, layout_key: str, named: str) -> str:
        return scan_key(layout_key, named)

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


def _runs(parent: str, folders: list[str], count: int) -> list[KeyRange]:
    """``folders`` of ``parent`` cut into ``count`` runs of consecutive folders."""
    size = -(-len(folders) // count)
    return [KeyRange(parent, folders=tuple(folders[i : i + size])) for i in range(0, len(folders), size)]
