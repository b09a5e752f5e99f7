"""The reaper: shards whose worker died go back to the queue, or to quarantine after too many tries.

A running shard's lease is renewed by its worker's heartbeat (``pisar.worker.lease``), so an
expired lease means the worker is gone (killed, preempted, partitioned). Redis would redeliver its
unacked message only after the visibility timeout (hours) and not at all if Redis lost it; the
catalog knows at once. ``pisar feed`` runs this in its loop, one per deployment (a second one is
harmless: each transition is one conditional UPDATE).
"""

from __future__ import annotations

from pisar.catalog.db import get_engine
from pisar.catalog.expiry import Expired, expire_leases
from pisar.catalog.models import utcnow


def reap(url: str, max_attempts: int) -> Expired:
    """Move every expired running shard to ``queued`` or, after ``max_attempts``, ``quarantined``
    (``pisar.catalog.expiry``). The caller publishes ``requeue``; a shard set to queued whose message
    then fails to send is found again by ``pisar resume``, never lost.
    """
    with get_engine(url).begin() as conn:
        return expire_leases(conn, utcnow(), max_attempts)
