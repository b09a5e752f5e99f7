"""The greedy token and its log-probability from the decoder's last hidden state, the vocabulary taken in cache-sized chunks.

On a CPU a step's logits are the largest thing it touches: a batch of 64 lines over a RoBERTa-sized
vocabulary in fp32 is several times a core's L2. Taken whole, the projection writes them out
and logsumexp, the masks, argmax and the gather each stream them back from L3 or memory, and
those passes cost more than the decoder's layers (docs/performance.md). Here the projection writes
one chunk of columns that fits in L2 (``CACHE_BYTES``) and the chunk's logsumexp, masks and maximum
read it while it is still there; across chunks a running maximum keeps the first index of a tie,
as argmax does, and the running normaliser combines the chunks' logsumexps of the raw logits (the
confidence formula's, taken before any mask). No batch x vocabulary tensor exists at any point.

The rules that need the whole row (a repetition penalty, repeated n-grams) and the forced tokens
stay with ``_Rules.choose`` in pisar/reader/greedy.py on full logits; on CUDA one GEMM over the whole
vocabulary beats many small ones, so the loop keeps the full logits there (and in CUDA graphs).
"""

from __future__ import annotations

import torch

CACHE_BYTES = 1 << 20  # one chunk's fp32 logits: half of this machine's 2 MB L2 per core
SMALLEST_CHUNK = 2048  # below this the per-chunk dispatches cost more than the cache saves


def chunk_columns(rows: int, vocab: int) -> int:
    """The columns per chunk for ``rows`` rows: as many as fit ``CACHE_BYTES``, within [``SMALLEST_CHUNK``, ``vocab``]."""
    return min(vocab, max(SMALLEST_CHUNK, CACHE_BYTES // (4 * max(rows, 1))))


class ChunkedChoice:
    """``output_projection`` cut into column chunks (views, nothing copied), with each mask's ids per chunk."""

    def __init__(self, projection: torch.nn.Linear, columns: int) -> None:
        weight, bias = projection.weight, projection.bias
        self.vocab = weight.shape[0]
        self.starts = list(range(0, self.vocab, columns))
        self.weights = [weight[start : start + columns].t() for start in self.starts]
        self.biases = [None if bias is None else bias[start : start + columns] for start in self.starts]
        self._masks: dict[tuple[int, ...], list[torch.Tensor | None]] = {}

    def choose(self, hidden: torch.Tensor, banned: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's greedy token, never one of ``banned``, and its log-probability under the raw logits.

        ``hidden``: (rows, width) final decoder states. The chosen token is never a masked one, so
        its masked logit is its raw logit.
        """
        masks = self._chunk_masks(banned, hidden.device)
        best = index = normaliser = None
        for start, weight, bias, mask in zip(self.starts, self.weights, self.biases, masks, strict=True):
            logits = (hidden @ weight if bias is None else torch.addmm(bias, hidden, weight)).float()
            part = torch.logsumexp(logits, dim=-1)
            if mask is not None:
                logits.index_fill_(1, mask, float("-inf"))
            value, local = logits.max(dim=-1)
            if best is None:
                best, index, normaliser = value, local, part
                continue
            better = (value > best) | (value.isnan() & ~best.isnan())  # strict: an earlier chunk keeps a tie; NaN wins, as in argmax
            best = torch.where(better, value, best)
            index = torch.where(better, local + start, index)
            normaliser = torch.logaddexp(normaliser, part)
        return index, best - normaliser

    def _chunk_masks(self, banned: tuple[int, ...], device: torch.device) -> list[torch.Tensor | None]:
        """The ids of ``banned`` in each chunk, as chunk-local indices (``None`` where a chunk has none); ids past the vocabulary are ignored, as generate() ignores them."""
        masks = self._masks.get(banned)
        if masks is None:
            ends = [*self.starts[1:], self.vocab]
            masks = []
            for start, end in zip(self.starts, ends, strict=True):
                local = [token - start for token in banned if start <= token < end]
                masks.append(torch.tensor(local, dtype=torch.long, device=device) if local else None)
            self._masks[banned] = masks
        return masks
