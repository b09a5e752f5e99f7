"""Generation-failure flags: a text cut at the token limit, and a text that ends in a loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pisar import model_ref
from pisar.worker.engine import Engine
from pisar.worker.flags import MAX_LENGTH, REPETITION, generation_flags, repeats_at_end
from pisar.worker.images import ImageLimits, decode_line


def test_repetition_means_one_ngram_repeated_at_the_end() -> None:
    assert repeats_at_end([5, 9, 1, 2, 3, 1, 2, 3, 1, 2, 3])  # a 3-gram, three times
    assert repeats_at_end([4, 7, 7, 7, 7, 7, 7])  # one token, six times
    assert not repeats_at_end([4, 7, 7, 7, 7, 7])  # five dots are a leader, not a loop
    assert not repeats_at_end([1, 2, 1, 2, 5])  # a repeat that does not run to the end
    assert not repeats_at_end(list(range(40)))
    assert generation_flags([1, 2, 3], ended=True) == ()
    assert generation_flags([1, 2, 1, 2, 1, 2], ended=False) == (MAX_LENGTH, REPETITION)


def test_engine_flags_lines_that_hit_the_token_limit(tiny_model: Path, print_lines: Path) -> None:
    """The random test model never writes its end token within 24 tokens: every line is cut at the limit."""
    engine = Engine(model_ref.resolve(model_ref.parse(str(tiny_model))), device="cpu", dtype="float32")
    limits = ImageLimits(89_478_485, 4, 16_384)
    pixels = np.stack([engine.preprocess(decode_line(p.read_bytes(), limits).line) for p in sorted(print_lines.glob("*.png"))[:4]])
    capped = engine.recognize(pixels, {"max_new_tokens": 6})
    assert all(MAX_LENGTH in r.flags for r in capped)
