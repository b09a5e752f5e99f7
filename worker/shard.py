"""Running one shard: claim, fetch and preprocess ahead, batched generate, one fenced commit.

The same ``ShardRunner.run`` serves the Celery task and the embedded ``pisar run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sqlmodel import Session

from pisar.catalog.bulk import LineResult
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, LineStatus, utcnow
from pisar.errors import LineError, TransientError
from pisar.model_ref import ModelRef
from pisar.settings import Settings
from pisar.storage import Storage, open_storage
from pisar.worker import metrics, stopping, store
from pisar.worker.engine import Engine, Recognition, apply_process_settings
from pisar.worker.fetch import Prepared, prepare_lines, prepare_one
from pisar.worker.images import ImageLimits
from pisar.worker.lease import LeaseKeeper, LeaseLost

log = logging.getLogger(__name__)

EngineProvider = Callable[[Campaign], Engine]


@dataclass
class ShardOutcome:
    """What happened to one delivery of a shard."""

    shard_id: int
    state: str  # done | skipped | fenced | stalled (outage, released) | stopped (worker stopping, released) | failed | quarantined
    lines: int = 0
    ok: int = 0
    errors: int = 0
    load_seconds: float = 0.0
    generate_seconds: float = 0.0
    error: str | None = None
    attempts: int = 0

    @property
    def retryable(self) -> bool:
        return self.state in ("failed", "stalled", "stopped")


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

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        """Run one delivery of a shard; never raises for a bad line, returns what happened."""
        outcome = self._run(campaign_id, shard_id)
        metrics.SHARDS.labels(outcome.state).inc()
        return outcome

    def _run(self, campaign_id: int, shard_id: int) -> ShardOutcome:
        held = store.claim(self.catalog_url, shard_id, self.worker, self.settings.lease_seconds, self.settings.max_attempts)
        if held is None:
            log.info("shard %s: duplicate or stale delivery, skipped", shard_id)
            return ShardOutcome(shard_id, "skipped")
        if held.campaign_id != campaign_id:
            log.warning("shard %s belongs to campaign %s, not %s as the message said", shard_id, held.campaign_id, campaign_id)
        try:
            with LeaseKeeper(self.catalog_url, held, self.settings.lease_seconds) as lease:
                campaign = self._campaign(held.campaign_id)  # the catalog, not the message, says whose shard it is
                if held.model_id:  # `retry --model`: this shard runs with another model (the copy is detached)
                    campaign.model_id, campaign.model_revision = held.model_id, held.model_revision or ""
                engine = self.engines(campaign)
                keys = store.lines_to_do(self.catalog_url, shard_id)
                if held.suspect:
                    log.warning("shard %s: its last worker died; reading it one line at a time", shard_id)
                probe = partial(store.probe, self.catalog_url, held) if held.suspect else None

                def between_batches() -> None:
                    lease.check()
                    stopping.check()

                results, load_s, gen_s = self._transcribe(
                    keys, self._storage(campaign.source_url), engine, campaign.generation.get("overrides", {}), between_batches, probe
                )
        except LeaseLost as exc:
            log.warning("%s; stopped without writing", exc)
            return ShardOutcome(shard_id, "fenced", error=str(exc), attempts=held.attempts)
        except stopping.WorkerStopping as exc:  # not the shard's fault: no attempt is spent
            store.release(self.catalog_url, held)
            log.warning("shard %s: %s; released for another worker", shard_id, exc)
            return ShardOutcome(shard_id, "stopped", error=str(exc), attempts=held.attempts - 1)
        except TransientError as exc:  # storage outage: not the shard's fault, so no attempt is spent
            store.release(self.catalog_url, held)
            log.warning("shard %s: %s; released, retrying later", shard_id, exc)
            return ShardOutcome(shard_id, "stalled", error=str(exc), attempts=held.attempts - 1)
        except Exception as exc:  # noqa: BLE001 - any shard-level failure is recorded, then retried or quarantined
            message = f"{type(exc).__name__}: {exc}"
            state = store.fail(self.catalog_url, held, message, self.settings.max_attempts)
            log.warning("shard %s attempt %s failed (%s): %s", shard_id, held.attempts, state, message)
            return ShardOutcome(shard_id, state or "fenced", error=message, attempts=held.attempts)
        except BaseException:  # Ctrl-C, SystemExit: hand the shard back instead of holding its lease
            store.release(self.catalog_url, held)
            log.warning("shard %s interrupted and released", shard_id)
            raise
        model = str(ModelRef.of(campaign.model_id, campaign.model_revision))
        results = [r._replace(model=model) for r in results]
        started = time.perf_counter()
        committed = store.commit(self.catalog_url, held, results, engine.describe(), load_s, gen_s)
        metrics.STAGE_SECONDS.labels("commit").inc(time.perf_counter() - started)
        metrics.record_gpu_memory()
        if not committed:
            log.warning("shard %s: lease lost to a newer claim, %s results discarded", shard_id, len(results))
            return ShardOutcome(shard_id, "fenced", lines=len(results))
        metrics.record_lines(campaign.name, ((r.status, r.error_class) for r in results))
        ok = sum(1 for r in results if r.status == LineStatus.OK)
        log.info(
            "shard %s done: %s lines (%s ok, %s error) load %.2fs generate %.2fs",
            shard_id,
            len(results),
            ok,
            len(results) - ok,
            load_s,
            gen_s,
        )
        return ShardOutcome(shard_id, "done", len(results), ok, len(results) - ok, load_s, gen_s, attempts=held.attempts)

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

    def _transcribe(
        self,
        keys: list[str],
        storage: Storage,
        engine: Engine,
        generation: dict[str, Any],
        check_lease: Callable[[], None],
        probe: Callable[[str], bool] | None = None,
    ) -> tuple[list[LineResult], float, float]:
        """All lines of the shard, in key order; returns results and seconds waiting for input / generating.

        Lines are read ``length_groups`` batches ahead and sorted by width within that group, so a
        batch's lines end at about the same step (``DecodeSteps``); results go back to key order.
        The group starts at one batch and doubles, so the accelerator does not wait for a whole
        group at the start of a shard.

        ``check_lease`` runs before each batch and raises if another worker took the shard meanwhile
        (or if the worker is stopping and must give the shard back).
        With ``probe`` (a suspect shard), lines are read and generated one at a time, each key recorded
        by ``probe`` first, so the reaper can name the line a crash happened on.
        """
        prepare = partial(prepare_one, storage=storage, limits=self.limits, preprocess=engine.preprocess)
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
                results.extend(self._result(p.key, out, p.note, p.size) for p, out in zip(batch, outputs, strict=True))
            ready.clear()

        waited = time.perf_counter()
        for item in items:
            load_s += time.perf_counter() - waited
            fetch_s += item.fetch_seconds
            preprocess_s += item.preprocess_seconds
            if item.error is not None:
                results.append(self._result(item.key, item.error))
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

    def _result(
        self, key: str, outcome: Recognition | LineError, note: str | None = None, size: tuple[int, int] | None = None
    ) -> LineResult:
        now = utcnow()
        if isinstance(outcome, LineError):
            return LineResult(
                key, LineStatus.ERROR.value, None, None, None, None, outcome.error_class, str(outcome), None, None, self.worker, now
            )
        return LineResult(
            key,
            LineStatus.OK.value,
            outcome.text,
            outcome.confidence,
            outcome.min_token_prob,
            outcome.token_count,
            None,
            None,
            note,
            ",".join(outcome.flags) or None,
            self.worker,
            now,
            *(size or (None, None)),
        )


def _one_at_a_time(keys: list[str], prepare: Callable[[str], Prepared], probe: Callable[[str], bool]) -> Iterator[Prepared]:
    """Each key recorded by ``probe`` (committed) before it is fetched; the caller generates it before asking for the next."""
    for key in keys:
        if not probe(key):
            raise LeaseLost(f"the shard was claimed again by another worker before line {key}")
        yield prepare(key)
