"""How many lines a ``generate`` call may take: measured from the accelerator's free memory.

A fixed batch size is wrong twice over: too small wastes most of an H100, too large dies with an
out-of-memory error on a smaller card or a longer ``max_new_tokens``. On CUDA the engine runs two
short probe batches of blank lines at the full token budget, reads the peak memory of each, and
solves ``peak = fixed + per_line x lines``. The batch is then the largest that fits in a share of
the free memory, capped, and rounded down to a multiple of 8 (tensor-core friendly shapes).
An out-of-memory error later still halves the batch (``Engine.recognize``), so a wrong estimate
costs one retry, not a shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PROBE_LINES = (2, 8)


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
