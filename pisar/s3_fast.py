"""The GIL-free S3 path: obstore (Rust ``object_store``) for the hot GETs and LISTs, boto3 for the rest.

boto3 spends its CPU per object read and per key listed in Python, under the GIL that also drives
the decoder; obstore does the HTTP, signing and XML in Rust (the figures: docs/performance.md,
"S3 reads and listings"). What users rely on is kept: credentials come from boto3's own chain
(environment, profiles, roles, instance metadata: ``Boto3CredentialProvider`` asks the same session),
path or virtual addressing and the endpoint come from the same settings, and object_store retries
5xx, timeouts and dropped connections with backoff.

Two limits of ``object_store`` decide where boto3 stays:

- its paths cannot hold control characters, ``.`` or ``..`` segments or empty segments, while an
  S3 key may hold anything: such a key is read by boto3, and a listing that meets one goes on
  through boto3 from the last key it yielded (so does a listing obstore fails for another reason:
  boto3 then says what is wrong, a missing bucket or an outage, as before);
- its errors carry a type only for "not found" and "permission": for any other failure the read is
  asked again through boto3, whose HTTP status decides between ``FetchFailed`` (refused for good)
  and ``TransientError`` (an outage), as before.

It lists by path segments, so it lists only where S3's string prefix means the same (an empty
prefix, or one that ends in ``/``), and only from the start of a prefix: where a listing starts
after a key, servers read S3's StartAfter differently (SeaweedFS as a cursor in its folder-by-folder
order), and the delimited and run listings of ``S3Storage`` depend on boto3's exact request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pisar.errors import MissingObject
from pisar.settings import Settings

if TYPE_CHECKING:
    import boto3
    from obstore.store import S3Store

PAGE = 1000


def open_store(bucket: str, settings: Settings, session: boto3.session.Session) -> S3Store | None:
    """An obstore client for ``bucket`` on the configured endpoint; ``None`` without credentials (boto3 then says why)."""
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store

    if session.get_credentials() is None:
        return None
    endpoint = settings.s3_endpoint_url
    virtual = settings.s3_addressing_style == "virtual" or (settings.s3_addressing_style == "auto" and not endpoint)
    config: dict[str, Any] = {"region": session.region_name or "us-east-1", "virtual_hosted_style_request": virtual}
    if endpoint:
        config["endpoint"] = endpoint
    return S3Store(
        bucket,
        config=config,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http:")),
            "connect_timeout": timedelta(seconds=10),
            "timeout": timedelta(seconds=60),
            "pool_max_idle_per_host": str(max(10, settings.fetch_threads, settings.list_threads)),
        },
        retry_config={
            "max_retries": max(0, settings.s3_max_attempts - 1),
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=15), "base": 2},
            "retry_timeout": timedelta(minutes=3),
        },
        credential_provider=Boto3CredentialProvider(session),
    )


def failures() -> tuple[type[Exception], ...]:
    """What obstore raises: its own errors, ``ValueError`` for a key it cannot name, ``OSError`` for a
    missing object and for timeouts. Any of them (but not-found on a read) sends the request to boto3."""
    from obstore.exceptions import BaseError

    return (BaseError, ValueError, OSError)


def read(store: S3Store, key: str) -> bytes | None:
    """The object's bytes; ``None`` when obstore cannot name the key or failed for a reason it does not type.

    ``MissingObject`` for a key that is not there.
    """
    import obstore
    from obstore.exceptions import NotFoundError

    if _maybe_mangled(key):  # boto3 names it exactly
        return None
    try:
        return bytes(obstore.get(store, key).bytes())
    except (NotFoundError, FileNotFoundError):
        raise MissingObject(f"s3://{_bucket(store)}/{key} does not exist") from None
    except failures():  # an unnameable key, or an error boto3 classifies by its HTTP status
        return None


def lists_alike(prefix: str) -> bool:
    """True when object_store's segment prefix lists exactly what S3's string prefix does."""
    return prefix == "" or prefix.endswith("/")


def list_pages(store: S3Store, prefix: str) -> Iterator[list[str]]:
    """Every key under ``prefix``, in the server's order, a page at a time.

    A key object_store cannot name fails its whole page, and so does one it may have changed
    (``_maybe_mangled``); the caller lists on with boto3 from the last key it got.
    """
    import obstore

    for batch in obstore.list(store, prefix or None, chunk_size=PAGE):
        if keys := [meta["path"] for meta in batch]:
            if any(map(_maybe_mangled, keys)):
                raise ValueError("a key object_store may have changed: the listing goes on through boto3")
            yield keys


def _maybe_mangled(key: str) -> bool:
    """True for a key object_store may not have given back as it is: it turns some control characters
    (ESC among them) into U+FFFD instead of failing, so a listed key holding either is asked of boto3."""
    return "\ufffd" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)


def _bucket(store: S3Store) -> str:
    return str(store.config.get("bucket", "?"))
