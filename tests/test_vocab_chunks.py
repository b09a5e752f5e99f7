"""The greedy choice taken over vocabulary chunks (pisar/reader/vocab_chunks.py) is the choice over the whole
logits: the same token, ties to the first index, masks across chunk edges, the raw normaliser."""

from __future__ import annotations

import pytest
import torch

from pisar.reader.vocab_chunks import ChunkedChoice, chunk_columns


def whole(projection: torch.nn.Linear, hidden: torch.Tensor, banned: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: full logits, logsumexp before the mask, argmax after it (as ``_Rules.choose``)."""
    logits = projection(hidden).float()
    normaliser = torch.logsumexp(logits, dim=-1)
    masked = logits.clone()
    if banned:
        masked[:, list(banned)] = float("-inf")
    chosen = masked.argmax(dim=-1)
    return chosen, logits.gather(1, chosen[:, None]).squeeze(1) - normaliser


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("columns", [7, 64, 300, 1000])
def test_chunks_choose_what_the_whole_vocabulary_chooses(bias: bool, columns: int) -> None:
    torch.manual_seed(columns)
    projection = torch.nn.Linear(32, 300, bias=bias)
    hidden = torch.randn(48, 32)
    chunks = ChunkedChoice(projection, columns)
    for banned in [(), (2,), (6, 7, 8, 63, 64, 299), tuple(range(0, 300, 3)), (5, 300, 4000)]:
        with torch.inference_mode():
            ours, theirs = chunks.choose(hidden, banned), whole(projection, hidden, tuple(t for t in banned if t < 300))
        assert torch.equal(ours[0], theirs[0]), banned
        assert torch.allclose(ours[1], theirs[1], atol=1e-5), banned
        assert not set(ours[0].tolist()) & set(banned)


def test_a_tie_across_chunks_goes_to_the_first_index() -> None:
    """Rows whose largest logit appears in several chunks (equal weight rows): argmax's first index."""
    projection = torch.nn.Linear(4, 40, bias=False)
    with torch.no_grad():
        projection.weight.zero_()
        projection.weight[[3, 13, 27]] = 1.0  # columns 3, 13, 27 tie for every positive hidden
        projection.weight[[9, 39]] = 2.0  # and 9, 39 beat them
    hidden = torch.ones(5, 4)
    chunks = ChunkedChoice(projection, 10)
    with torch.inference_mode():
        assert chunks.choose(hidden)[0].tolist() == [9] * 5
        assert chunks.choose(hidden, (9,))[0].tolist() == [39] * 5
        assert chunks.choose(hidden, (9, 39))[0].tolist() == [3] * 5
        assert chunks.choose(hidden, (3, 9, 39))[0].tolist() == [13] * 5


def test_a_nan_logit_is_chosen_as_argmax_chooses_it() -> None:
    """A broken row (NaN logits) reads as argmax reads it, so that the engine's checks see the same thing."""
    projection = torch.nn.Linear(4, 40, bias=True)
    with torch.no_grad():
        projection.bias[25] = float("nan")
    hidden = torch.randn(3, 4)
    with torch.inference_mode():
        ours, theirs = ChunkedChoice(projection, 10).choose(hidden), whole(projection, hidden, ())
    assert torch.equal(ours[0], theirs[0]) and ours[0].tolist() == [25] * 3
    assert ours[1].isnan().all()


def test_chunks_fit_the_cache_within_bounds() -> None:
    assert chunk_columns(64, 50_265) == 4096
    assert chunk_columns(512, 50_265) == 2048  # the floor: fewer dispatches
    assert chunk_columns(1, 50_265) == 50_265
    assert chunk_columns(64, 600) == 600
