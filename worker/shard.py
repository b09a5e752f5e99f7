"""Running one shard: claim, fetch and preprocess ahead, batched generate, one fenced commit.

The same ``ShardRunner.run`` serves the Celery task and the embedded ``pisar run``. Whatever happens,
a claimed shard ends in a recorded state (``pisar/catalog/shards.py``), chosen by the type of what
went wrong: a bad line is that line's error; an outage (``pisar.errors.is_outage``) or a stopping
worker releases the shard without spending an attempt; a node that cannot serve (``FatalError``)
releases it and says so, so the worker stops taking work; anything else fails the shard with its
message, and it is retried until quarantined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlmodel import Session

from pisar.catalog import shards
from pisar.catalog.bulk import LineResult
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, LineStatus, utcnow
from pisar.catalog.shards import Claim, RunFacts
from pisar.errors import FatalError, LineError, is_outage
from pisar.flags import join_flags
from pisar.images import ImageLimits
from pisar.model_ref import ModelRef
from pisar.settings import Settings
from pisar.storage import Storage, open_storage
from pisar.words import format_confidences
from pisar.worker import metrics, stopping
from pisar.worker.fetch import Prepared, prepare_lines, prepare_one
from pisar.worker.lease import LeaseKeeper, LeaseLost
from pisar.worker.page_lines import PageLines
from pisar.worker.process_settings import apply_process_settings

if TYPE_CHECKING:  # the runner only hands pixels to an engine: torch stays out of the Celery parent and the claim tests
    from pisar.worker.engine import Engine, Recognition

log = logging.getLogger(__name__)

EngineProvider = Callable[[Campaign], "Engine"]
T = TypeVar("T")


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


class ShardRunner:
    """Runs shards for one worker identity against one catalog."""

    def __init__(self, settings: Settings, engines: EngineProvider, worker: str) -> None:
        self.settings = settings
        self.catalog_url = settings.catalog_url
        self.engines = engines
        self.worker = worker
        self.limits = ImageLimits.from_settings(settings)
        apply_process_settings(settings)
        self.pool = ThreadPoolExecutor(max_workers=settings.fetch_threads, thread_name_prefix="pisar-fetch")
        self._storages: dict[str, Storage] = {}
        self.broken: FatalError | None = None  # set once this node cannot serve: it takes no more shards

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        """Run one delivery of a shard; never raises for a bad line or a failed shard, returns what happened."""
        outcome = self._run(campaign_id, shard_id)
        metrics.SHARDS.labels(outcome.outcome.value).inc()
        return outcome

    def _run(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        if self.broken is not None:  # a message that reached a broken node before it stopped consuming
            return ShardOutcome(shard_id, Outcome.BROKEN, error=str(self.broken))
        try:
            held = shards.claim(self.catalog_url, shard_id, self.worker, self.settings.lease_seconds, self.settings.max_attempts)
        except Exception as exc:  # nothing is held yet: an outage waits, anything else means this node cannot use its catalog
            if is_outage(exc):
                log.warning("shard with catalog id %s: catalog unreachable (%s); retrying later", shard_id, type(exc).__name__)
                return ShardOutcome(shard_id, Outcome.STALLED, error=_describe(exc))
            self.broken = FatalError(f"cannot claim shards: {_describe(exc)}")
            log.error("shard with catalog id %s: %s; this worker stops taking work", shard_id, self.broken)
            return ShardOutcome(shard_id, Outcome.BROKEN, error=str(self.broken))
        if isinstance(held, shards.Skipped):
            if held.held_until is not None:
                log.info("%s: held by %s until %s; looked at again then", held.name, held.holder, f"{held.held_until:%H:%M:%S}")
                return ShardOutcome(shard_id, Outcome.HELD, held_until=held.held_until)
            log.info("%s: duplicate or stale delivery, skipped", held.name or f"shard with catalog id {shard_id} (not in the catalog)")
            return ShardOutcome(shard_id, Outcome.SKIPPED)
        if held.campaign_id != campaign_id:
            log.warning("%s belongs to campaign %s, not %s as the message said", held.name, held.campaign_id, campaign_id)
        try:
            return self._run_held(held)
        except LeaseLost as exc:
            log.warning("%s; stopped without writing", exc)
            return ShardOutcome(shard_id, Outcome.FENCED, error=str(exc), attempts=held.attempts)
        except stopping.WorkerStopping as exc:  # not the shard's fault: no attempt is spent
            return self._release(held, Outcome.STOPPED, exc)
        except FatalError as exc:  # this node, not the shard: give it back and stop taking work
            self.broken = exc
            return self._release(held, Outcome.BROKEN, exc)
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

    def _run_held(self, held: Claim) -> ShardOutcome:
        """Read and commit a claimed shard; the heartbeat renews its lease throughout, the commit included."""
        with LeaseKeeper(self.catalog_url, held, self.settings.lease_seconds) as lease:
            campaign = self._campaign(held.campaign_id)  # the catalog, not the message, says whose shard it is
            if held.model_id:  # `retry --model`: this shard runs with another model (the copy is detached)
                campaign.model_id, campaign.model_revision = held.model_id, held.model_revision or ""
            engine = self.engines(campaign)  # FatalError (no device, weights that will not load): this node's, not the shard's
            keys = shards.lines_to_do(self.catalog_url, held.shard_id)
            if held.suspect:
                log.warning("%s: its last worker died; reading it one line at a time", held.name)
            probe = partial(shards.probe, self.catalog_url, held) if held.suspect else None

            def between_batches() -> None:
                lease.check()
                stopping.check()

            prepare = self.preparer(self._storage(campaign.source_url), engine, keys, campaign.layout, campaign.crop)
            results, load_s, gen_s = self._transcribe(
                keys, prepare, engine, campaign.generation.get("overrides", {}), between_batches, probe
            )
            model = str(ModelRef.of(campaign.model_id, campaign.model_revision))
            results = [replace(r, model=model) for r in results]
            timeout = self.settings.commit_timeout_seconds
            lease.renew_for(timeout)  # a commit that hangs past its timeout stops being renewed: the reaper takes the shard
            started = time.perf_counter()
            committed = shards.finish(
                self.catalog_url, held, results, RunFacts(engine.describe(campaign.generation.get("overrides", {})), load_s, gen_s), timeout
            )
            metrics.STAGE_SECONDS.labels("commit").inc(time.perf_counter() - started)
        metrics.record_gpu_memory()
        if not committed:
            log.warning("%s: lease lost to a newer claim, %s results discarded", held.name, len(results))
            return ShardOutcome(held.shard_id, Outcome.FENCED, lines=len(results), attempts=held.attempts)
        metrics.record_lines(campaign.name, ((r.status, r.error_class) for r in results))
        ok = sum(1 for r in results if r.status == LineStatus.OK)
        log.info(
            "%s done: %s lines (%s ok, %s error) load %.2fs generate %.2fs",
            held.name,
            len(results),
            ok,
            len(results) - ok,
            load_s,
            gen_s,
        )
        return ShardOutcome(held.shard_id, Outcome.DONE, len(results), ok, len(results) - ok, load_s, gen_s, attempts=held.attempts)

    def _release(self, held: Claim, outcome: Outcome, exc: BaseException) -> ShardOutcome:
        """Give the shard back (queued, attempt refunded) for its message to be sent again."""
        released = self._settle(partial(shards.release, self.catalog_url, held))
        after = "released for another run" if released else "a newer claim holds it" if released is False else "not released"
        log.warning("%s: %s (%s); %s", held.name, _describe(exc), outcome.value, after)
        return ShardOutcome(held.shard_id, outcome, error=_describe(exc), attempts=held.attempts - 1)

    def _fail(self, held: Claim, exc: BaseException) -> ShardOutcome:
        """Record the shard's own failure: failed (retried) or quarantined at the last attempt."""
        message = _describe(exc)
        state = self._settle(partial(shards.fail, self.catalog_url, held, message, self.settings.max_attempts))
        log.warning("%s attempt %s failed (%s): %s", held.name, held.attempts, state or "fenced", message, exc_info=exc)
        outcome = {shards.FAILED: Outcome.FAILED, shards.QUARANTINED: Outcome.QUARANTINED}.get(state, Outcome.FENCED)  # type: ignore[arg-type]
        return ShardOutcome(held.shard_id, outcome, error=message, attempts=held.attempts)

    def _settle(self, move: Callable[[], T]) -> T | None:
        """Run a move of a held shard, retrying through a catalog outage for up to one lease.

        Past that the lease has expired and the reaper moves the shard instead; ``None`` then.
        """
        deadline = time.monotonic() + self.settings.lease_seconds
        wait = 0.5
        while True:
            try:
                return move()
            except Exception as exc:
                if not is_outage(exc) or time.monotonic() + wait > deadline:
                    log.error("cannot record the shard's state (%s); its lease will expire and the reaper moves it", _describe(exc))
                    return None
                time.sleep(wait)
                wait = min(wait * 2, 5.0)

    def _campaign(self, campaign_id: int) -> Campaign:
        with Session(get_engine(self.catalog_url)) as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise LookupError(f"campaign {campaign_id} is not in the catalog")
            session.expunge(campaign)
            return campaign

    def _storage(self, url: str) -> Storage:
        if url not in self._storages:
            self._storages[url] = open_storage(url, self.settings)
        return self._storages[url]

    def preparer(
        self, storage: Storage, engine: Engine, keys: list[str], layout: str = "lines", crop: str = "polygon"
    ) -> Callable[[str], Prepared]:
        """What makes one of ``keys`` ready for the model: a line image fetched and decoded, or (``layout="xml"``)
        a TextLine cut from its page's scan, each layout and scan read once for the shard (worker/page_lines.py)."""
        if layout == "xml":
            return PageLines(storage, self.limits, engine.preprocess, keys, crop, self.settings.baseline_height).prepare
        return partial(prepare_one, storage=storage, limits=self.limits, preprocess=engine.preprocess)

    def _transcribe(
        self,
        keys: list[str],
        prepare: Callable[[str], Prepared],
        engine: Engine,
        generation: dict[str, Any],
        check_lease: Callable[[], None],
        probe: Callable[[str], bool] | None = None,
    ) -> tuple[list[LineResult], float, float]:
        """All lines of the shard, in key order, each made ready by ``prepare``; returns results and seconds waiting for input / generating.

        Lines are read ``length_groups`` batches ahead and sorted by width within that group, so a
        batch's lines end at about the same step (``DecodeSteps``); results go back to key order.
        The group starts at one batch and doubles, so the accelerator does not wait for a whole
        group at the start of a shard.

        ``check_lease`` runs before each batch and raises if another worker took the shard meanwhile
        (or if the worker is stopping and must give the shard back).
        With ``probe`` (a suspect shard), lines are read and generated one at a time, each key recorded
        by ``probe`` first, so the reaper can name the line a crash happened on.
        """
        if probe is None:
            settings = self.settings
            batch_size = engine.batch_size(generation, settings.batch_size, settings.max_batch_size, settings.batch_memory_share)
            group = batch_size * settings.length_groups
            items = prepare_lines(keys, prepare, self.pool, group + batch_size * settings.prefetch_batches)
        else:
            batch_size = group = 1
            items = _one_at_a_time(keys, prepare, probe)
        results: list[LineResult] = []
        ready: list[Prepared] = []
        load_s = gen_s = fetch_s = preprocess_s = 0.0
        steps_paid, steps_useful = engine.steps.paid, engine.steps.useful
        flush_at = batch_size  # doubles up to ``group``: the first batch starts as soon as it is ready

        def flush() -> None:
            """Generate the ready lines in batches of similar width: a batch costs as many steps as its longest line."""
            nonlocal gen_s, flush_at
            flush_at = min(group, flush_at * 2)
            ready.sort(key=lambda p: p.width_ratio)
            for start in range(0, len(ready), batch_size):
                batch = ready[start : start + batch_size]
                metrics.BATCH_LINES.observe(len(batch))
                check_lease()
                started = time.perf_counter()
                outputs = engine.recognize(np.stack([p.pixels for p in batch]), generation)
                gen_s += time.perf_counter() - started
                results.extend(self._result(p, out) for p, out in zip(batch, outputs, strict=True))
            ready.clear()

        waited = time.perf_counter()
        for item in items:
            load_s += time.perf_counter() - waited
            fetch_s += item.fetch_seconds
            preprocess_s += item.preprocess_seconds
            if item.error is not None:
                results.append(self._result(item, item.error))
            else:
                ready.append(item)
                if len(ready) >= flush_at:
                    flush()
            waited = time.perf_counter()
        flush()
        results.sort(key=lambda r: r.key)
        for stage, seconds in (("fetch", fetch_s), ("preprocess", preprocess_s), ("input_wait", load_s), ("generate", gen_s)):
            metrics.STAGE_SECONDS.labels(stage).inc(seconds)
        metrics.DECODER_ROW_STEPS.inc(engine.steps.paid - steps_paid)
        metrics.GENERATED_TOKENS.inc(engine.steps.useful - steps_useful)
        return results, load_s, gen_s

    def _result(self, item: Prepared, outcome: Recognition | LineError) -> LineResult:
        """The catalog's row for one line: its reading or its error, and where a page line sits on its page."""
        common = {"key": item.key, "worker": self.worker, "finished_at": utcnow(), **(asdict(item.place) if item.place else {})}
        if isinstance(outcome, LineError):
            return LineResult(**common, status=LineStatus.ERROR.value, error_class=outcome.error_class, error=str(outcome))
        width, height = item.size or (None, None)
        return LineResult(
            **common,
            status=LineStatus.OK.value,
            text=outcome.text,
            confidence=outcome.confidence,
            min_token_prob=outcome.min_token_prob,
            token_count=outcome.token_count,
            note=item.note,
            flags=join_flags(outcome.flags),
            width=width,
            height=height,
            word_confidences=format_confidences(outcome.word_confidences),
        )


def _describe(exc: BaseException) -> str:
    """``ClassName: message``: how a shard's error is stored and logged."""
    return f"{type(exc).__name__}: {exc}"


def _one_at_a_time(keys: list[str], prepare: Callable[[str], Prepared], probe: Callable[[str], bool]) -> Iterator[Prepared]:
    """Each key recorded by ``probe`` (committed) before it is fetched; the caller generates it before asking for the next."""
    for key in keys:
        if not probe(key):
            raise LeaseLost(f"the shard was claimed again by another worker before line {key}")
        yield prepare(key)
