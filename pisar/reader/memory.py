"""How many lines a batch may hold: measured from the accelerator's free memory, halved when it runs out.

A fixed batch size is wrong twice over: too small wastes most of an H100, too large dies with an
out-of-memory error on a smaller card or a longer ``max_new_tokens``. On CUDA the torch back-end runs two
short probe batches of blank lines at the full token budget, reads the peak memory of each, and
solves ``peak = fixed + per_line x lines``. The batch is then the largest that fits in a share of
the free memory, capped, and rounded down to a multiple of 8 (tensor-core friendly shapes).
An out-of-memory error later still halves the batch (``BatchLimit.read``), so a wrong estimate
costs one retry, not a shard; any other error splits the batch until the line that causes it
stands alone, and only that line fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pisar.errors import GenerationFailed
from pisar.reader.backends import Backend
from pisar.reader.options import GenerationOptions
from pisar.reader.reading import LineOutcome

log = logging.getLogger(__name__)

PROBE_LINES = (2, 8)
CPU_BATCH = 16  # lines a batch on a CPU when the setting is unset: larger batches gain nothing on a few cores


@dataclass(frozen=True)
class MemoryCost:
    """Bytes a batch needs beyond the loaded model: ``fixed + per_line x lines``."""

    fixed: int
    per_line: int

    @classmethod
    def measure(cls, peak_bytes: Callable[[int], int], sizes: tuple[int, int] = PROBE_LINES) -> MemoryCost:
        """Solve the line from the peak memory of two probe batches (``peak_bytes(lines)``)."""
        small, large = sizes
        low, high = peak_bytes(small), peak_bytes(large)
        per_line = max(1, (high - low) // (large - small))
        return cls(fixed=max(0, low - per_line * small), per_line=per_line)

    def lines_that_fit(self, free_bytes: int, share: float, cap: int) -> int:
        """The largest batch within ``share`` of ``free_bytes``, at most ``cap``, a multiple of 8 when over 8; at least 1."""
        lines = int((free_bytes * share - self.fixed) // self.per_line)
        lines = min(cap, lines)
        if lines >= 8:
            lines -= lines % 8
        return max(1, lines)


class BatchLimit:
    """A back-end's batch size: chosen once per token budget, lowered (never raised) by out-of-memory errors."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.max_batch: int | None = None  # set, and only lowered, by an out-of-memory error
        self._fitted: dict[tuple[int | None, int | None], int] = {}

    def batch_size(self, options: GenerationOptions, requested: int | None, cap: int, share: float) -> int:
        """``requested`` when set; on an accelerator what fits in ``share`` of its free memory at the
        full token budget, at most ``cap`` (measured once per budget and beam count); else ``CPU_BATCH``,
        at most ``cap``."""
        if requested:
            return requested
        key = options.budget_key()
        if key not in self._fitted:
            fitted = self.backend.fitted_batch(options, cap, share)
            if fitted is None:  # no device memory to measure: nothing worth keeping
                return min(cap, CPU_BATCH)
            self._fitted[key] = fitted
        return self._fitted[key]

    def read(self, pixels: np.ndarray, options: GenerationOptions) -> list[LineOutcome]:
        """Read a batch, in pieces when it is larger than the limit or fails.

        Out of memory: the limit halves for the rest of the reader's life (logged once per
        halving), and the batch goes on in pieces that fit. Any other error splits the batch in
        halves until the bad line stands alone; that line becomes ``GenerationFailed``, the rest go on.
        """
        if self.max_batch is not None and len(pixels) > self.max_batch:
            step = self.max_batch
            return [outcome for start in range(0, len(pixels), step) for outcome in self.read(pixels[start : start + step], options)]
        try:
            return list(self.backend.read(pixels, options))
        except Exception as exc:  # out of memory, or a model error on one of the lines: isolate it
            if self.backend.is_out_of_memory(exc):
                self.backend.recover()
                if len(pixels) == 1:
                    log.warning("out of memory on a single line: %s", exc)
                    return [GenerationFailed(f"out of memory on a single line: {exc}")]
                self.max_batch = max(1, len(pixels) // 2)
                log.warning("out of memory at %s lines a batch; batches are now at most %s", len(pixels), self.max_batch)
                return self.read(pixels, options)
            if len(pixels) == 1:
                log.warning("generation failed on one line: %s", exc)
                return [GenerationFailed(f"{type(exc).__name__}: {exc}")]
            half = len(pixels) // 2
            return self.read(pixels[:half], options) + self.read(pixels[half:], options)
