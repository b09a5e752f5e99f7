"""What became of one delivery of a shard, and so what its message needs: the runner's verdict, the task's instruction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pisar.catalog.models import utcnow
from pisar.settings import Settings


class Outcome(StrEnum):
    """What became of one delivery of a shard, and so what its message needs."""

    DONE = "done"  # committed
    SKIPPED = "skipped"  # a duplicate or stale delivery: nothing is owed to the shard (done, quarantined)
    HELD = "held"  # a live lease holds the shard: looked at again when that lease ends (its holder may be dead)
    FENCED = "fenced"  # a newer claim took the shard; this run wrote nothing
    FAILED = "failed"  # an error of the shard's own: attempt spent, retried with backoff
    QUARANTINED = "quarantined"  # the same on the last attempt
    STALLED = "stalled"  # an outage (catalog, object store): released, retried after PISAR_OUTAGE_RETRY_SECONDS
    STOPPED = "stopped"  # the worker is stopping: released, sent again at once for another worker
    BROKEN = "broken"  # this node cannot serve (FatalError): released, sent again at once; the worker exits


HELD_MARGIN_SECONDS = 2.0  # after a lease's end, before its shard is looked at again


def retry_delay(attempts: int) -> int:
    """Seconds before a failed shard is tried again: 5, 10, 20, ... capped at 5 minutes."""
    return min(300, 5 * 2 ** max(0, attempts - 1))


@dataclass
class ShardOutcome:
    """What happened to one delivery of a shard."""

    shard_id: int
    outcome: Outcome
    lines: int = 0
    ok: int = 0
    errors: int = 0
    load_seconds: float = 0.0
    generate_seconds: float = 0.0
    error: str | None = None
    attempts: int = 0
    held_until: datetime | None = None  # HELD: when the holder's lease ends unless renewed

    def resend_after(self, settings: Settings) -> float | None:
        """Seconds until the shard's message should be sent again; ``None`` when nothing more is owed to it.

        A held shard's message comes back just after the holder's lease would end: by then the
        holder has finished (the delivery is skipped), renewed (it comes back again), or died
        (it is claimed), so a shard whose only message found a live lease is never left behind.
        """
        if self.outcome is Outcome.HELD and self.held_until is not None:
            # Never longer than half the visibility timeout: Redis would hand a message held back longer to another worker too.
            until_free = (self.held_until - utcnow()).total_seconds() + HELD_MARGIN_SECONDS
            return max(1.0, min(until_free, settings.visibility_timeout_seconds / 2))
        if self.outcome is Outcome.FAILED:
            return retry_delay(self.attempts)
        if self.outcome is Outcome.STALLED:
            return settings.outage_retry_seconds
        if self.outcome in (Outcome.STOPPED, Outcome.BROKEN):
            return 0
        return None
