"""The HTTP client every IIIF request goes through: polite to the archive's servers, safe for ours.

Polite: at most ``PISAR_IIIF_HOST_CONNECTIONS`` requests at once to one host from this process;
a 429 or a 5xx is retried with exponential backoff, waiting what ``Retry-After`` asks (up to
``PISAR_IIIF_RETRY_AFTER_MAX_SECONDS``); every request has a connect and a read timeout and an
overall deadline, so a server that hangs or trickles costs a bounded time.

Safe: connections are opened only to addresses ``addresses.AddressPolicy`` permits, checked on the
resolved address the socket then connects to; redirects are followed by hand (at most five), each
hop checked the same way and kept to http(s) and to the host the manifest named; a response larger than the caller's cap is refused
as soon as its ``Content-Length`` or its body passes it, never held whole.

What a failure becomes, by type (``pisar/errors.py``): 404/410 ``MissingObject``; 401/403
``AccessDenied``; a forbidden address ``ForbiddenAddress``; too large ``ResponseTooLarge``; another
4xx, or a server that stops answering mid-request (read timeouts) past the retries, ``FetchFailed``:
each a line's (or a page's) recorded error. A server that cannot be connected to (refused,
unresolvable, connect timeout) or still answers 429 or 5xx after the retries is an outage,
``TransientError``: the shard is released and read again later, as for S3's throttling.
"""

from __future__ import annotations

import email.utils
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util import connection as urllib3_connection

from pisar import __version__
from pisar.errors import FetchFailed, LineError, MissingObject, TransientError
from pisar.iiif.addresses import AddressPolicy

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5


class AccessDenied(LineError):
    """The server refused the request (401 or 403): the image needs a login or is not public."""


class ResponseTooLarge(LineError):
    """A response is larger than Pisar reads for its kind (a manifest, a layout, an image)."""


@dataclass(frozen=True)
class ClientLimits:
    """How the client treats servers (``PISAR_IIIF_*`` settings)."""

    host_connections: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = 4
    retry_after_max: float = 60.0
    backoff_first: float = 0.5
    user_agent: str = f"Pisar/{__version__} (bulk handwritten text recognition; IIIF client)"


@dataclass
class Traffic:
    """Requests and bytes received, by kind (manifest, info, image, region, layout): what a benchmark reports."""

    requests: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, size: int) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.received[kind] += size


def _checked_connection(base: type[HTTPConnection], policy: AddressPolicy) -> type[HTTPConnection]:
    """``base`` whose sockets connect only to addresses ``policy`` permits (the address it checked)."""

    class Checked(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            last: OSError | None = None
            for _, address in policy.resolve(self._dns_host, self.port):  # ForbiddenAddress, or TransientError when unresolvable
                try:
                    return urllib3_connection.create_connection(
                        (address, self.port), self.timeout, source_address=self.source_address, socket_options=self.socket_options
                    )
                except TimeoutError:
                    raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from None
                except OSError as exc:
                    last = exc
            raise NewConnectionError(self, f"cannot connect to {self.host}: {last}")

    return Checked


class IiifClient:
    """GET with the address policy, per-host limits, retries and size caps; thread-safe, one per process."""

    def __init__(self, policy: AddressPolicy, limits: ClientLimits | None = None) -> None:
        self.policy, self.limits = policy, limits or ClientLimits()
        self.traffic = Traffic()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        pools = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
        connections = {"http": HTTPConnection, "https": HTTPSConnection}
        self._pool = urllib3.PoolManager(
            num_pools=64,
            maxsize=self.limits.host_connections,
            block=True,
            # identity: a compressed body is counted against its cap only as it is inflated, so none is asked for
            headers={"User-Agent": self.limits.user_agent, "Accept-Encoding": "identity"},
            retries=False,
            timeout=urllib3.Timeout(connect=self.limits.connect_timeout, read=self.limits.read_timeout),
        )
        # Every pool this manager makes opens checked connections. The manager's map starts as urllib3's
        # module-wide one, shared by every PoolManager in the process (botocore's, selenium's): it is
        # replaced by this manager's own, never changed in place.
        checked = {
            scheme: type(
                f"Checked{pool_class.__name__}", (pool_class,), {"ConnectionCls": _checked_connection(connections[scheme], policy)}
            )
            for scheme, pool_class in pools.items()
        }
        self._pool.pool_classes_by_scheme = {**self._pool.pool_classes_by_scheme, **checked}

    def get(self, url: str, max_bytes: int, kind: str, accept: str = "*/*") -> bytes:
        """The body of ``url`` (redirects followed, each hop checked), at most ``max_bytes`` long."""
        for _ in range(MAX_REDIRECTS + 1):
            status, body, location = self._get_once(url, max_bytes, kind, accept)
            if location is None:
                return self._checked_status(url, status, body)
            url = _redirect_target(url, location)
        raise FetchFailed(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _get_once(self, url: str, max_bytes: int, kind: str, accept: str) -> tuple[int, bytes, str | None]:
        """One URL, retried on 429/5xx and timeouts: (status, body, redirect location or None)."""
        _check_scheme(url)
        host = urlsplit(url).hostname or ""
        deadline_each = self.limits.connect_timeout + self.limits.read_timeout * 2
        wait = self.limits.backoff_first
        problem = ""
        for attempt in range(1, self.limits.attempts + 1):
            retry_after: float | None = None
            try:
                with self._host(host):
                    status, body, location, retry_after = self._request(url, max_bytes, accept, deadline_each)
                self.traffic.add(kind, len(body))
                if status not in RETRIED_STATUSES:
                    return status, body, location
                if attempt == self.limits.attempts:
                    raise TransientError(f"{url}: HTTP {status} after {attempt} attempts")
                problem = f"HTTP {status}"
            except (ReadTimeoutError, _Deadline) as exc:
                problem = f"no answer in time ({exc})"
            except (NewConnectionError, ConnectTimeoutError) as exc:
                if attempt == self.limits.attempts:
                    raise TransientError(f"{host}: cannot connect ({exc})") from None
                problem = str(exc)
            except (ProtocolError, HTTPError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self.limits.attempts:
                pause = min(retry_after, self.limits.retry_after_max) if retry_after is not None else wait * (0.5 + random.random())
                time.sleep(pause)
                wait = min(wait * 2, 30.0)
        raise FetchFailed(f"{url}: {problem} after {self.limits.attempts} attempts")

    def _request(self, url: str, max_bytes: int, accept: str, deadline: float) -> tuple[int, bytes, str | None, float | None]:
        started = time.monotonic()
        headers = {**self._pool.headers, "Accept": accept}  # given headers replace the pool's: these carry them
        response = self._pool.request("GET", url, headers=headers, preload_content=False, redirect=False)
        try:
            location = response.headers.get("Location") if response.status in (301, 302, 303, 307, 308) else None
            retry_after = _retry_after(response.headers.get("Retry-After"))
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes and response.status < 300:
                raise ResponseTooLarge(f"{url}: {int(length):,} bytes, over the {max_bytes:,} Pisar reads")
            chunks, size = [], 0
            for chunk in response.stream(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise ResponseTooLarge(f"{url}: over the {max_bytes:,} bytes Pisar reads")
                if time.monotonic() - started > deadline:
                    raise _Deadline(f"{url}: still sending after {deadline:.0f} s")
                chunks.append(chunk)
            return response.status, b"".join(chunks), location, retry_after
        except BaseException:
            response.close()  # a body left half read: the connection is not reused
            raise
        finally:
            response.release_conn()

    @staticmethod
    def _checked_status(url: str, status: int, body: bytes) -> bytes:
        if 200 <= status < 300:
            return body
        if status in (404, 410):
            raise MissingObject(f"{url}: HTTP {status}")
        if status in (401, 403):
            raise AccessDenied(f"{url}: HTTP {status}")
        raise FetchFailed(f"{url}: HTTP {status}")

    def _host(self, host: str) -> threading.BoundedSemaphore:
        with self._hosts_lock:
            if host not in self._hosts:
                self._hosts[host] = threading.BoundedSemaphore(self.limits.host_connections)
            return self._hosts[host]

    def close(self) -> None:
        self._pool.clear()


class _Deadline(Exception):
    """A response kept coming past its deadline (a server trickling bytes)."""


def _check_scheme(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchFailed(f"{url!r}: only http and https URLs are fetched")


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect leads, kept to http(s) and to the host the manifest named (http to https on it is fine)."""
    target = urljoin(url, location)
    _check_scheme(target)
    if (urlsplit(target).hostname or "").lower() != (urlsplit(url).hostname or "").lower():
        raise FetchFailed(f"{url}: redirected to another host ({urlsplit(target).hostname}), which no manifest names")
    return target


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
