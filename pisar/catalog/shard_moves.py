"""The one table of allowed moves of a shard's state, and its picture for the docs.

``pisar/catalog/shards.py`` builds every move's SQL from ``MOVES`` and is the only writer of a
shard's state; ``docs/reliability.md`` shows ``diagram()`` and ``moves_table()`` (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pisar.catalog.models import ShardState

PENDING, QUEUED, RUNNING = ShardState.PENDING, ShardState.QUEUED, ShardState.RUNNING
DONE, FAILED, QUARANTINED = ShardState.DONE, ShardState.FAILED, ShardState.QUARANTINED
DETECTING = ShardState.DETECTING


class Move(StrEnum):
    """Every way a shard's state changes."""

    LIST = "list"
    LIST_SCANS = "list_scans"
    DETECTED = "detected"
    REDETECT = "redetect"
    PUBLISH = "publish"
    UNPUBLISH = "unpublish"
    CLAIM = "claim"
    FINISH = "finish"
    FAIL = "fail"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    EXPIRE = "expire"
    REOPEN = "reopen"


@dataclass(frozen=True)
class Transition:
    """Where a move may start, where it ends, and who makes it."""

    sources: frozenset[ShardState]  # empty: the move creates the row
    target: ShardState
    by: str


#: The table of allowed moves; the move functions below build their SQL from it.
MOVES: dict[Move, Transition] = {
    Move.LIST: Transition(frozenset(), PENDING, "the listing writes a new shard with its lines"),
    Move.LIST_SCANS: Transition(frozenset(), DETECTING, "the listing of a detect campaign: a shard for its scans' lines to come"),
    Move.DETECTED: Transition(
        frozenset({DETECTING}), PENDING, "the detect worker, in the transaction that settles the last of the shard's scans"
    ),
    Move.REDETECT: Transition(
        frozenset({PENDING, QUEUED, DONE, FAILED, QUARANTINED}), DETECTING, "`pisar retry --scan`: one of its scans is detected again"
    ),
    Move.PUBLISH: Transition(frozenset({PENDING}), QUEUED, "the feeder, just before it sends the shard's message"),
    Move.UNPUBLISH: Transition(frozenset({QUEUED}), PENDING, "the feeder, when the message could not be sent"),
    Move.CLAIM: Transition(
        frozenset({PENDING, QUEUED, FAILED}), RUNNING, "a worker: new fencing token and lease, one more attempt (below the limit)"
    ),
    Move.FINISH: Transition(frozenset({RUNNING}), DONE, "the worker, in the transaction that writes every line's result"),
    Move.FAIL: Transition(frozenset({RUNNING}), FAILED, "the worker: a deterministic error, attempts left; retried with backoff"),
    Move.QUARANTINE: Transition(
        frozenset({RUNNING}), QUARANTINED, "the worker (an error) or the reaper (a dead worker) on the last attempt"
    ),
    Move.RELEASE: Transition(
        frozenset({RUNNING}), QUEUED, "the worker: an outage, a stopping or broken worker; attempt refunded, message re-sent"
    ),
    Move.EXPIRE: Transition(frozenset({RUNNING}), PENDING, "the reaper or a claim: the lease ran out, its worker is gone"),
    Move.REOPEN: Transition(
        frozenset({PENDING, QUEUED, DONE, FAILED, QUARANTINED}), PENDING, "`pisar resume` or `pisar retry`: back in line for the feeder"
    ),
}


def diagram() -> str:
    """``MOVES`` as a Mermaid state diagram (what docs/reliability.md shows)."""
    lines = ["stateDiagram-v2"]
    for move, transition in MOVES.items():
        for source in sorted(transition.sources) or ["[*]"]:
            lines.append(f"    {source} --> {transition.target}: {move}")
    return "\n".join(lines)


def moves_table() -> str:
    """``MOVES`` as a Markdown table (docs/reliability.md shows it beside the diagram)."""
    rows = ["| move | from | to | made by |", "| --- | --- | --- | --- |"]
    for move, transition in MOVES.items():
        sources = ", ".join(sorted(transition.sources)) or "(a new row)"
        rows.append(f"| `{move}` | {sources} | {transition.target} | {transition.by} |")
    return "\n".join(rows)
