"""Locks between processes that share a catalog: one migration at a time, one lister per campaign.

Postgres holds them as session advisory locks on a connection of their own (freed if the process
dies). SQLite has no such thing, so its locks are record locks on bytes of one file beside the catalog
(``pisar.db.lock``: byte 0 the schema, byte 1 + id a campaign's listing), also freed by the
kernel when the holder dies.
Two ``pisar run`` started together on a new catalog would otherwise both migrate it, and one of
them would die half-way ("table campaign already exists").
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from pisar.catalog.db import get_engine

#: Advisory-lock namespaces (Postgres's two-int form: class, object).
MIGRATION = 0x70697362  # "pisb": the schema; the object is 0
LISTING = 0x70697361  # "pisa": a campaign's listing; the object is the campaign id

_POLL_SECONDS = 0.5


class Busy(Exception):
    """The lock is held by another process and the caller asked not to wait."""


@contextmanager
def held(url: str, namespace: int, key: int = 0, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock ``(namespace, key)`` of the catalog at ``url`` for the block.

    ``wait=False`` raises ``Busy`` at once when another process holds it; otherwise ``on_wait`` runs
    once, the first time the lock is found taken (to say why nothing happens), and the call waits.
    """
    if url.startswith("sqlite"):
        with _file_lock(_lock_path(url), 0 if namespace == MIGRATION else 1 + key, wait, on_wait):
            yield
        return
    engine = get_engine(url)
    params = {"c": namespace, "o": key}
    with engine.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), params).scalar_one():
            if not wait:
                raise Busy
            if on_wait is not None:
                on_wait()
            conn.execute(text("SELECT pg_advisory_lock(:c, :o)"), params)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), params)
            conn.commit()


def _lock_path(url: str) -> Path:
    """The lock file of a SQLite catalog: ``pisar.db.lock`` beside ``pisar.db``."""
    database = make_url(url).database or ""
    base = Path(database) if database and database != ":memory:" else Path(f"pisar-memory-{os.getpid()}")
    return base.with_name(base.name + ".lock")


_files: dict[tuple[int, Path], int] = {}  # (pid, lock file) -> the fd this process locks ranges of; never closed
_threads: dict[tuple[Path, int], threading.Lock] = {}  # one per byte: fcntl's record locks are per process, not per thread
_registry = threading.Lock()


@contextmanager
def _file_lock(path: Path, offset: int, wait: bool, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """An exclusive lock on byte ``offset`` of ``path`` (``lockf``): one file holds every lock of a catalog.

    Record locks belong to a process and are all dropped when it closes any descriptor of the
    file, so each process keeps one descriptor open for good, and threads of one process exclude
    each other with a ``threading.Lock`` per byte first.
    """
    path = path.resolve()
    with _registry:
        fd = _files.get((os.getpid(), path))
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _files[(os.getpid(), path)] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        local = _threads.setdefault((path, offset), threading.Lock())
    told = False
    if not local.acquire(blocking=False):
        if not wait:
            raise Busy
        if on_wait is not None:
            on_wait()
        told = True
        local.acquire()
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                break
            except OSError as exc:  # EAGAIN or EACCES: another process holds the byte
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not wait:
                    raise Busy from None
                if not told and on_wait is not None:
                    on_wait()
                told = True
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
    finally:
        local.release()
