"""Generation-failure flags: a text cut at the token limit, and a text that ends in a loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pisar import model_ref
from pisar.catalog.codecs import encode_flags
from pisar.flags import EMPTY, MAX_LENGTH, REPETITION, generation_flags, repeats_at_end
from pisar.images import ImageLimits, decode_line
from pisar.reader import LineReader
from tests.helpers.reading import read_outcomes


def test_repetition_means_one_ngram_repeated_at_the_end() -> None:
    assert repeats_at_end([5, 9, 1, 2, 3, 1, 2, 3, 1, 2, 3])  # a 3-gram, three times
    assert repeats_at_end([4, 7, 7, 7, 7, 7, 7])  # one token, six times
    assert not repeats_at_end([4, 7, 7, 7, 7, 7])  # five dots are a leader, not a loop
    assert not repeats_at_end([1, 2, 1, 2, 5])  # a repeat that does not run to the end
    assert not repeats_at_end(list(range(40)))
    assert generation_flags("abc", [1, 2, 3], ended=True) == ()
    assert generation_flags("ababab", [1, 2, 1, 2, 1, 2], ended=False) == (MAX_LENGTH, REPETITION)
    assert generation_flags("", [], ended=True) == (EMPTY,)
    assert generation_flags("  ", [7, 7], ended=True) == (EMPTY,)  # a blank reading is as empty


def test_flags_are_stored_once_each_in_order() -> None:
    assert encode_flags(["max_length", "", "empty", "max_length"]) == "max_length,empty"
    assert encode_flags([]) is None


def test_engine_flags_lines_that_hit_the_token_limit(tiny_model: Path, print_lines: Path) -> None:
    """The random test model never writes its end token within 24 tokens: every line is cut at the limit."""
    engine = LineReader(model_ref.resolve(model_ref.parse(str(tiny_model))), device="cpu", dtype="float32")
    limits = ImageLimits(89_478_485, 4, 16_384)
    pixels = np.stack([engine.prepare(decode_line(p.read_bytes(), limits).line) for p in sorted(print_lines.glob("*.png"))[:4]])
    capped = read_outcomes(engine, pixels, {"max_new_tokens": 6})
    assert all(MAX_LENGTH in r.flags for r in capped)


def test_an_empty_reading_has_the_end_tokens_probability_as_its_confidence(tiny_model: Path, print_lines: Path) -> None:
    """An empty line is among the likeliest errors: it gets a confidence (how sure the model was that
    the line ends at once) and the ``empty`` flag, so confidence filters and `retry --flag empty` find it."""
    import torch

    engine = LineReader(model_ref.resolve(model_ref.parse(str(tiny_model))), device="cpu", dtype="float32")
    limits = ImageLimits(89_478_485, 4, 16_384)
    pixels = np.stack([engine.prepare(decode_line(p.read_bytes(), limits).line) for p in sorted(print_lines.glob("*.png"))[:3]])
    config = engine.backend.model.generation_config
    empty = read_outcomes(engine, pixels, {"max_new_tokens": 1, "min_new_tokens": 0, "forced_eos_token_id": config.eos_token_id})
    with torch.inference_mode():  # the same probability, from one teacher-forced step of the model
        start = torch.full((len(pixels), 1), config.decoder_start_token_id)
        logits = engine.backend.model(pixel_values=engine.backend.to_device(pixels), decoder_input_ids=start).logits[:, -1].float()
        expected = torch.softmax(logits, dim=-1)[:, config.eos_token_id].tolist()
    for reading, probability in zip(empty, expected, strict=True):
        assert (reading.text, reading.token_count, reading.flags) == ("", 0, (EMPTY,))
        assert reading.confidence == reading.min_token_prob
        assert reading.confidence == pytest.approx(probability, rel=1e-4)
        assert 0 < reading.confidence < 1
