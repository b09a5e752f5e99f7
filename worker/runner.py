"""Running one shard: claim, read, then finish, fail or release, decided in one place (``ShardRunner.run``).

The same runner serves the Celery task and the embedded ``pisar run``. Whatever happens, a claimed
shard ends in a recorded state (``pisar/catalog/shards.py``), chosen by the type of what went
wrong: a bad line is that line's error; an outage (``pisar.errors.is_outage``) or a stopping worker
releases the shard without spending an attempt; a node that cannot serve (``FatalError``) releases
it and says so (``worker/serving.py``), so the worker stops taking work; anything else fails the
shard with its message, and it is retried until quarantined. How lines are read is
``worker/batches.py``'s, how readings become rows ``worker/rows.py``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from sqlmodel import Session

from pisar.catalog import pages, shards
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, LineStatus
from pisar.catalog.shards import Claim, RunFacts
from pisar.errors import FatalError, is_outage
from pisar.images import ImageLimits
from pisar.model_ref import ModelRef
from pisar.reader import GenerationOptions, LineReader
from pisar.settings import Settings
from pisar.sources import Cutting, line_source
from pisar.storage import OpenStorages
from pisar.worker import metrics, stopping
from pisar.worker.batches import read_lines
from pisar.worker.lease import LeaseKeeper, LeaseLost
from pisar.worker.outcomes import Outcome, ShardOutcome
from pisar.worker.process_settings import apply_process_settings
from pisar.worker.rows import shard_rows
from pisar.worker.serving import NodeHealth
from pisar.worker.settle import settle

log = logging.getLogger(__name__)

#: The reader for a model and dtype (``pisar.reader.ReaderCache``): loading it may raise ``FatalError``.
ReaderProvider = Callable[[ModelRef, str], LineReader]
T = TypeVar("T")


class ShardRunner:
    """Runs shards for one worker identity against one catalog."""

    def __init__(self, settings: Settings, readers: ReaderProvider, worker: str, node: NodeHealth | None = None) -> None:
        self.settings = settings
        self.catalog_url = settings.catalog_url
        self.readers = readers
        self.worker = worker
        self.node = node or NodeHealth()  # set once this node cannot serve: it takes no more shards
        self.limits = ImageLimits.from_settings(settings)
        self.pool = ThreadPoolExecutor(max_workers=settings.fetch_threads, thread_name_prefix="pisar-fetch")
        self._storages = OpenStorages(self.settings)
        apply_process_settings(settings)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        """Run one delivery of a shard; never raises for a bad line or a failed shard, returns what happened."""
        outcome = self._decide(campaign_id, shard_id)
        metrics.SHARDS.labels(outcome.outcome.value).inc()
        return outcome

    def _decide(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        """Claim, read and commit; every way that can end is sorted here, by type, into an outcome."""
        if self.node.reason is not None:  # a message that reached a broken node before it stopped consuming
            return ShardOutcome(shard_id, Outcome.BROKEN, error=str(self.node.reason))
        try:
            held = shards.claim(self.catalog_url, shard_id, self.worker, self.settings.lease_seconds, self.settings.max_attempts)
        except Exception as exc:  # nothing is held yet: an outage waits, anything else means this node cannot use its catalog
            if is_outage(exc):
                log.warning("shard with catalog id %s: catalog unreachable (%s); retrying later", shard_id, type(exc).__name__)
                return ShardOutcome(shard_id, Outcome.STALLED, error=_describe(exc))
            self.node.cannot_serve(FatalError(f"cannot claim shards: {_describe(exc)}"))
            return ShardOutcome(shard_id, Outcome.BROKEN, error=str(self.node.reason))
        if isinstance(held, shards.Skipped):
            if held.held_until is not None:
                log.info("%s: held by %s until %s; looked at again then", held.name, held.holder, f"{held.held_until:%H:%M:%S}")
                return ShardOutcome(shard_id, Outcome.HELD, held_until=held.held_until)
            log.info("%s: duplicate or stale delivery, skipped", held.name or f"shard with catalog id {shard_id} (not in the catalog)")
            return ShardOutcome(shard_id, Outcome.SKIPPED)
        if held.campaign_id != campaign_id:
            log.warning("%s belongs to campaign %s, not %s as the message said", held.name, held.campaign_id, campaign_id)
        try:
            return self._read_and_commit(held)
        except LeaseLost as exc:
            log.warning("%s; stopped without writing", exc)
            return ShardOutcome(shard_id, Outcome.FENCED, error=str(exc), attempts=held.attempts)
        except stopping.WorkerStopping as exc:  # not the shard's fault: no attempt is spent
            return self._release(held, Outcome.STOPPED, exc)
        except FatalError as exc:  # this node, not the shard: give it back, then stop taking work
            released = self._release(held, Outcome.BROKEN, exc)
            self.node.cannot_serve(exc)
            return released
        except Exception as exc:  # every failure of a held shard ends in a recorded state
            if is_outage(exc):
                return self._release(held, Outcome.STALLED, exc)
            return self._fail(held, exc)
        except BaseException:  # Ctrl-C, SystemExit: hand the shard back (one try: the process is leaving) instead of holding its lease
            try:
                shards.release(self.catalog_url, held)
                log.warning("%s interrupted and released", held.name)
            except Exception as exc:  # the lease expires and the reaper takes the shard
                log.warning("%s interrupted; the release failed (%s)", held.name, _describe(exc))
            raise

    def _read_and_commit(self, held: Claim) -> ShardOutcome:
        """Read and commit a claimed shard; the heartbeat renews its lease throughout, the commit included."""
        with LeaseKeeper.for_shard(self.catalog_url, held, self.settings.lease_seconds) as lease:
            campaign = self._campaign(held.campaign_id)  # the catalog, not the message, says whose shard it is
            if held.model_id:  # `retry --model`: this shard runs with another model
                campaign.model_id, campaign.model_revision = held.model_id, held.model_revision or ""
            reader = self.readers(ModelRef(campaign.model_id, campaign.model_revision), campaign.dtype)  # FatalError: this node's
            stopping.check()  # a stop that began while the model loaded: give the shard back before reading it
            options = GenerationOptions.of_campaign(campaign.generation)
            keys = shards.lines_to_do(self.catalog_url, held.shard_id)
            if held.suspect:
                log.warning("%s: its last worker died; reading it one line at a time", held.name)

            def between_batches() -> None:
                lease.check()
                stopping.check()

            source = line_source(campaign.layout)
            stored = partial(pages.stored_layouts, self.catalog_url, campaign.id)
            cutting = Cutting(self.limits, campaign.crop, self.settings.baseline_height, stored)
            prepare = source.preparer(self._storages.of(campaign.source_url, campaign.id), keys, reader.prepare, cutting)
            probe = partial(shards.probe, self.catalog_url, held) if held.suspect else None
            read = read_lines(keys, prepare, reader, options, self.settings, self.pool, between_batches, probe)
            results = shard_rows(read.lines, self.worker, str(ModelRef.of(campaign.model_id, campaign.model_revision)))
            lease.renew_for(self.settings.commit_timeout_seconds)  # a commit that hangs past its timeout stops being renewed
            started = time.perf_counter()
            facts = RunFacts(read.provenance.reader, read.input_wait, read.generate)
            committed = shards.finish(self.catalog_url, held, results, facts, self.settings.commit_timeout_seconds)
            metrics.STAGE_SECONDS.labels("commit").inc(time.perf_counter() - started)
        metrics.record_gpu_memory()
        if not committed:
            log.warning("%s: lease lost to a newer claim, %s results discarded", held.name, len(results))
            return ShardOutcome(held.shard_id, Outcome.FENCED, lines=len(results), attempts=held.attempts)
        metrics.record_lines(campaign.name, ((r.status, r.error_class) for r in results))
        ok = sum(1 for r in results if r.status == LineStatus.OK)
        log.info(
            "%s done: %s lines (%s ok, %s error) load %.2fs generate %.2fs",
            *(held.name, len(results), ok, len(results) - ok, read.input_wait, read.generate),
        )
        return ShardOutcome(
            held.shard_id, Outcome.DONE, len(results), ok, len(results) - ok, read.input_wait, read.generate, attempts=held.attempts
        )

    def _release(self, held: Claim, outcome: Outcome, exc: BaseException) -> ShardOutcome:
        """Give the shard back (queued, attempt refunded) for its message to be sent again."""
        released = self._settle(partial(shards.release, self.catalog_url, held), held)
        after = "released for another run" if released else "a newer claim holds it" if released is False else "not released"
        log.warning("%s: %s (%s); %s", held.name, _describe(exc), outcome.value, after)
        return ShardOutcome(held.shard_id, outcome, error=_describe(exc), attempts=held.attempts - 1)

    def _fail(self, held: Claim, exc: BaseException) -> ShardOutcome:
        """Record the shard's own failure: failed (retried) or quarantined at the last attempt."""
        message = _describe(exc)
        state = self._settle(partial(shards.fail, self.catalog_url, held, message, self.settings.max_attempts), held)
        log.warning("%s attempt %s failed (%s): %s", held.name, held.attempts, state or "fenced", message, exc_info=exc)
        outcome = {shards.FAILED: Outcome.FAILED, shards.QUARANTINED: Outcome.QUARANTINED}.get(state, Outcome.FENCED)  # type: ignore[arg-type]
        return ShardOutcome(held.shard_id, outcome, error=message, attempts=held.attempts)

    def _settle(self, move: Callable[[], T], held: Claim) -> T | None:
        """Run a move of a held shard, retrying through a catalog outage for up to one lease (``worker/settle.py``)."""
        return settle(move, self.settings.lease_seconds, held.name)

    def _campaign(self, campaign_id: int) -> Campaign:
        with Session(get_engine(self.catalog_url)) as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise LookupError(f"campaign {campaign_id} is not in the catalog")
            session.expunge(campaign)
            return campaign


def _describe(exc: BaseException) -> str:
    """``ClassName: message``: how a shard's error is stored and logged."""
    return f"{type(exc).__name__}: {exc}"
