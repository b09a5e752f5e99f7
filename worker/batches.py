"""A shard's lines on their way to the reader: prepared ahead in a thread pool, grouped by width into batches.

The fetch pool fetches, decodes and preprocesses a bounded window of lines ahead (``prepare_ahead``),
so it works on the next batches while the main thread reads the current one, and memory stays
bounded. Lines are collected ``length_groups`` batches at a time and sorted by width within that
group (``WidthGroups``), so a batch's lines end at about the same decoder step (``DecodeSteps``); the
group starts at one batch and doubles, so the reader does not wait for a whole group at the start of
a shard. Outcomes go back to key order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from pisar.reader import GenerationOptions, LineOutcome, LineReader, Provenance
from pisar.settings import Settings
from pisar.sources import Prepared
from pisar.worker import metrics
from pisar.worker.lease import LeaseLost


def prepare_ahead(keys: Iterable[str], prepare: Callable[[str], Prepared], pool: ThreadPoolExecutor, window: int) -> Iterator[Prepared]:
    """Yield ``prepare(key)`` for each key in order, keeping up to ``window`` in flight.

    Exceptions other than ``LineError`` (a storage outage, say) propagate and fail the shard.
    """
    pending: deque[Future[Prepared]] = deque()
    iterator = iter(keys)
    try:
        for key in iterator:
            pending.append(pool.submit(prepare, key))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            next_key = next(iterator, None)
            if next_key is not None:
                pending.append(pool.submit(prepare, next_key))
            yield result
    finally:
        for future in pending:
            future.cancel()


def one_at_a_time(keys: list[str], prepare: Callable[[str], Prepared], probe: Callable[[str], bool]) -> Iterator[Prepared]:
    """Each key recorded by ``probe`` (committed) before it is fetched; the caller reads it before asking for the next."""
    for key in keys:
        if not probe(key):
            raise LeaseLost(f"the shard was claimed again by another worker before line {key}")
        yield prepare(key)


class WidthGroups:
    """Prepared lines collected and handed out as batches of similar width: a batch costs as many steps as its longest line."""

    def __init__(self, batch_size: int, group: int) -> None:
        self.batch_size, self.group = batch_size, group
        self.ready: list[Prepared] = []
        self.flush_at = batch_size  # doubles up to ``group``: the first batch starts as soon as it is ready

    def add(self, item: Prepared) -> list[list[Prepared]]:
        """Take one line; the batches due now (none until the group is full)."""
        self.ready.append(item)
        return self.flush() if len(self.ready) >= self.flush_at else []

    def flush(self) -> list[list[Prepared]]:
        """Every collected line, sorted by width, in batches."""
        self.flush_at = min(self.group, self.flush_at * 2)
        self.ready.sort(key=lambda p: p.width_ratio)
        batches = [self.ready[start : start + self.batch_size] for start in range(0, len(self.ready), self.batch_size)]
        self.ready = []
        return batches


@dataclass
class ShardReading:
    """A shard's lines, each with its outcome, in key order; how they were read; where the time went."""

    provenance: Provenance  # the last batch's (every batch of a shard is read alike)
    lines: list[tuple[Prepared, LineOutcome]] = field(default_factory=list)
    input_wait: float = 0.0  # the reader waiting for the pool
    generate: float = 0.0
    fetch: float = 0.0  # summed over the pool's threads
    preprocess: float = 0.0


def read_lines(
    keys: list[str],
    prepare: Callable[[str], Prepared],
    reader: LineReader,
    options: GenerationOptions,
    settings: Settings,
    pool: ThreadPoolExecutor,
    between_batches: Callable[[], None] = lambda: None,
    probe: Callable[[str], bool] | None = None,
) -> ShardReading:
    """Every one of ``keys`` made ready by ``prepare`` and read by ``reader`` in width-grouped batches.

    ``between_batches`` runs before each batch and raises to stop the shard (its lease was lost,
    the worker is stopping). With ``probe`` (a suspect shard), lines are prepared and read one at a
    time, each key recorded by ``probe`` first, so the reaper can name the line a crash happened on.
    """
    if probe is None:
        batch_size = reader.batch_size(options, settings.batch_size, settings.max_batch_size, settings.batch_memory_share)
        group = batch_size * settings.length_groups
        items = prepare_ahead(keys, prepare, pool, group + batch_size * settings.prefetch_batches)
    else:
        batch_size = group = 1
        items = one_at_a_time(keys, prepare, probe)
    shard = ShardReading(Provenance(reader.describe(options), options))  # a shard of unreadable lines is described too
    groups = WidthGroups(batch_size, group)
    paid, useful = reader.steps.paid, reader.steps.useful

    def read(batches: list[list[Prepared]]) -> None:
        for batch in batches:
            metrics.BATCH_LINES.observe(len(batch))
            between_batches()
            started = time.perf_counter()
            done = reader.read(np.stack([p.pixels for p in batch]), options)
            shard.generate += time.perf_counter() - started
            shard.provenance = done.provenance
            shard.lines.extend(zip(batch, done.outcomes, strict=True))

    waited = time.perf_counter()
    for item in items:
        shard.input_wait += time.perf_counter() - waited
        shard.fetch += item.fetch_seconds
        shard.preprocess += item.preprocess_seconds
        if item.error is not None:
            shard.lines.append((item, item.error))
        else:
            read(groups.add(item))
        waited = time.perf_counter()
    read(groups.flush())
    shard.lines.sort(key=lambda line: line[0].key)
    for stage, seconds in (
        ("fetch", shard.fetch),
        ("preprocess", shard.preprocess),
        ("input_wait", shard.input_wait),
        ("generate", shard.generate),
    ):
        metrics.STAGE_SECONDS.labels(stage).inc(seconds)
    metrics.DECODER_ROW_STEPS.inc(reader.steps.paid - paid)
    metrics.GENERATED_TOKENS.inc(reader.steps.useful - useful)
    return shard
