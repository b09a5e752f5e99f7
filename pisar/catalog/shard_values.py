"""What the shard lifecycle's moves hand back (``pisar/catalog/shards.py``): plain values, no writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pisar.safe_text import printable


@dataclass(frozen=True)
class Claim:
    """A held shard: the token proves the lease at commit time."""

    shard_id: int
    campaign_id: int
    token: int
    attempts: int
    suspect: bool = False  # its last run's worker died: run it one line at a time to find the line that kills
    model_id: str | None = None  # `retry --model` set another model for this shard
    model_revision: str | None = None
    index: int = 0  # the shard's number within its campaign: what `status`, `retry --shard` and the logs show
    name: str = ""  # ``shard_name``: how logs name it


@dataclass(frozen=True)
class Published:
    """A shard the feeder just marked queued: what its message and its label in Flower need."""

    shard_id: int
    campaign_id: int
    campaign_name: str
    index: int
    line_count: int


@dataclass(frozen=True)
class Skipped:
    """A delivery that claimed nothing. ``held_until`` set: a live worker holds the shard until then, so
    the delivery should come back at that time (its holder may have died); unset: nothing is owed
    to the shard (done, quarantined, out of attempts, or gone)."""

    held_until: datetime | None = None
    holder: str | None = None
    name: str = ""  # ``shard_name``; empty if the shard is not in the catalog


def shard_name(campaign_name: str, index: int) -> str:
    """``vol-1917 shard 3``: a shard as people name it (``status``, ``retry --shard``, logs), never by its row id."""
    return f"{printable(campaign_name)} shard {index}"


@dataclass(frozen=True)
class RunFacts:
    """How a run went, stored with its shard."""

    engine: str  # the reader's provenance: device, dtype, decode loop, e.g. ``cuda:bfloat16:greedy-loop+graphs``
    load_seconds: float
    generate_seconds: float


@dataclass
class Expired:
    """What one pass did: shards back in line, shards quarantined, lines set aside."""

    returned: list[int] = field(default_factory=list)  # back to pending: the feeder publishes them
    quarantined: list[int] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)  # keys set aside as WorkerCrash
