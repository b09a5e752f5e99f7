"""What the shard queue holds in a benchmark's own Redis: messages waiting, and memory used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _client(url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


def waiting(url: str, queue: str) -> int:
    """Shard messages waiting in ``queue``, over its priority lists."""
    from pisar.queue import waiting_by_priority

    with _client(url) as client:
        return sum(waiting_by_priority(client, queue).values())


def clear(url: str, queue: str) -> None:
    """Delete every message of ``queue``."""
    from pisar.queue import priority_lists

    with _client(url) as client:
        client.delete(*(key for _, key in priority_lists(queue)))


def used_memory(url: str) -> int:
    """Redis's ``used_memory``, in bytes."""
    with _client(url) as client:
        return int(client.info("memory")["used_memory"])
