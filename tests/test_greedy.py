"""Pisar's greedy loop (pisar/reader/greedy.py) chooses exactly what generate() chooses, on real lines, for
the demo model and both random test models; settings it does not follow go to generate()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pisar import model_ref
from pisar.errors import FatalError
from pisar.images import ImageLimits, decode_line
from pisar.reader import DecodeOptions, LineOutcome, LineReader, vocab_chunks
from pisar.reader.greedy import Decoded, GreedyLoop
from pisar.reader.torch_backend import TorchBackend
from tests.helpers.paths import DEMO_MODEL
from tests.helpers.reading import options
from tests.helpers.reference import CardLoop, assert_same_texts

GREEDY = {"num_beams": 1, "do_sample": False}  # what a campaign's generation overrides hold by default
LIMITS = ImageLimits(89_478_485, 4, 16_384)


def engine(folder: Path, decoder: str, graphs: str = "auto") -> TorchBackend:
    """An fp32 CPU torch back-end; ``graphs="on"``: the fixed-shape steps a CUDA graph captures, run uncaptured."""
    decode = DecodeOptions(decoder=decoder, graphs=graphs)
    return TorchBackend(model_ref.resolve(model_ref.parse(str(folder))), device="cpu", dtype="float32", options=decode)


def read(backend: TorchBackend, pixels: np.ndarray, overrides: dict) -> list[LineOutcome]:
    return list(backend.read(pixels, options(overrides)))


def batch(engine: TorchBackend, paths: list[Path]) -> np.ndarray:
    return np.stack([engine.prepare(decode_line(p.read_bytes(), LIMITS).line) for p in paths])


def until_the_end(tokens: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row's tokens up to and including its first end token (what follows is padding)."""
    rows = []
    for row in tokens.tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def read_alike(ours: TorchBackend, theirs: TorchBackend, pixels: np.ndarray, settings: dict) -> tuple[Decoded, int]:
    """The loop's reading of ``pixels``, checked token for token against generate()'s; and the end token."""
    with torch.inference_mode():
        decoded = ours.greedy.run(ours.to_device(pixels), settings)
        generated = theirs.model.generate(pixel_values=theirs.to_device(pixels), **settings)
    eos = ours.model.generation_config.eos_token_id
    assert until_the_end(decoded.tokens, eos) == until_the_end(generated[:, 1:], eos)
    return decoded, eos


# The demo model and the byte-level one on real lines take 7-12 s each: the full suite's (slow); the tiny one stays quick.
@pytest.fixture(
    scope="module", params=[pytest.param("demo", marks=pytest.mark.slow), "tiny", pytest.param("bytes", marks=pytest.mark.slow)]
)
def models(request: pytest.FixtureRequest) -> tuple[str, Path]:
    if request.param == "demo":
        return "demo", DEMO_MODEL
    return request.param, request.getfixturevalue("tiny_model" if request.param == "tiny" else "byte_model")


def test_the_loop_chooses_what_generate_chooses_on_real_lines(models: tuple[str, Path], print_lines: Path) -> None:
    name, folder = models
    ours, theirs = engine(folder, "auto"), engine(folder, "generate")
    assert ours.decoder_for(options(GREEDY)) == "greedy-loop" and theirs.decoder_for(options(GREEDY)) == "generate"
    assert ours.describe(options(GREEDY)).endswith(":greedy-loop")
    paths = sorted(print_lines.glob("*.png"))[:32]
    eos = ours.model.generation_config.eos_token_id
    for start in range(0, len(paths), 16):
        pixels = batch(ours, paths[start : start + 16])
        with torch.inference_mode():
            decoded = ours.greedy.run(ours.to_device(pixels), GREEDY)
            generated = theirs.model.generate(pixel_values=theirs.to_device(pixels), **GREEDY)
        assert until_the_end(decoded.tokens, eos) == until_the_end(generated[:, 1:], eos), name
        for mine, reference in zip(read(ours, pixels, GREEDY), read(theirs, pixels, GREEDY), strict=True):
            assert (mine.text, mine.token_count, mine.flags) == (reference.text, reference.token_count, reference.flags)
            assert mine.confidence == pytest.approx(reference.confidence, rel=1e-5, abs=1e-9)
            assert mine.min_token_prob == pytest.approx(reference.min_token_prob, rel=1e-5, abs=1e-9)


@pytest.mark.slow
def test_the_loop_reads_like_the_model_cards_loop(print_lines: Path) -> None:
    """The demo model's real reading (it ends its lines), one image at a time in fp32, against the loop's batches."""
    ours = engine(DEMO_MODEL, "auto")
    paths = sorted(print_lines.glob("*.png"))[:24]
    texts = [r.text for start in range(0, 24, 12) for r in read(ours, batch(ours, paths[start : start + 12]), GREEDY)]
    card = CardLoop(DEMO_MODEL)
    keys = {p.name: p for p in paths}
    assert_same_texts(card, {p.name: card.read(p) for p in paths}, dict(zip(keys, texts, strict=True)), keys)


def test_rows_that_end_are_dropped_and_cost_no_more_steps(print_lines: Path) -> None:
    """Lines of different lengths end at different steps; the loop stops paying for a row soon after its end."""
    ours = engine(DEMO_MODEL, "auto")
    pixels = batch(ours, sorted(print_lines.glob("*.png"))[:16])
    with torch.inference_mode():
        decoded = ours.greedy.run(ours.to_device(pixels), GREEDY)
    rows, steps = decoded.tokens.shape
    eos = ours.model.generation_config.eos_token_id
    ends = [row.index(eos) + 1 for row in decoded.tokens.tolist()]
    assert len(set(ends)) > 1 and steps < 160  # they end apart, and before the budget
    assert decoded.row_steps < rows * steps  # generate() pays rows x steps
    assert decoded.row_steps <= sum(-(-end // 4) * 4 for end in ends)  # each row: until the look after its end


def test_fixed_shape_steps_choose_what_the_plain_loop_chooses(models: tuple[str, Path], print_lines: Path) -> None:
    """The steps a CUDA graph captures (buckets of rows, the step a device tensor, the cache read in
    full under a mask), run uncaptured on the CPU: the same tokens as the plain loop, the buffers kept
    across batches, rows moved into smaller buckets as lines end."""
    name, folder = models
    plain, fixed = engine(folder, "auto", "off"), engine(folder, "auto", "on")
    assert fixed.describe(options(GREEDY)).endswith(":greedy-loop+static") and plain.describe(options(GREEDY)).endswith(":greedy-loop")
    paths = sorted(print_lines.glob("*.png"))[:22]
    eos = plain.model.generation_config.eos_token_id
    kept = []
    for start, size in ((0, 12), (12, 10)):  # 12 rows: bucket 16, then 8 as rows end; then a smaller batch
        pixels = batch(plain, paths[start : start + size])
        with torch.inference_mode():
            ours, theirs = fixed.greedy.run(fixed.to_device(pixels), GREEDY), plain.greedy.run(plain.to_device(pixels), GREEDY)
        assert until_the_end(ours.tokens, eos) == until_the_end(theirs.tokens, eos), name
        assert ours.tokens.shape == theirs.tokens.shape
        assert torch.allclose(ours.log_probs, theirs.log_probs, atol=1e-3), name  # the masked sums differ in the last bits
        assert ours.row_steps >= theirs.row_steps  # padding rows in a bucket are paid for
        kept.append(fixed.greedy.buffers)
    assert kept[0] is kept[1] and kept[0].capacity == 16
    with torch.inference_mode():
        fixed.greedy.run(fixed.to_device(batch(plain, paths[:17])), {**GREEDY, "max_new_tokens": 2})
    assert fixed.greedy.buffers is not kept[0] and fixed.greedy.buffers.capacity == 32  # a larger batch: new buffers
    fixed.greedy.release()
    assert fixed.greedy.buffers is None


def test_the_encoder_variants_refuse_a_device_that_cannot_run_them(tiny_model: Path) -> None:
    """FP8 needs a CUDA GPU of compute capability 8.9+ (and torchao): on this CPU the engine refuses
    to load, as a FatalError that stops the node, instead of reading with another model."""
    with pytest.raises(FatalError, match="PISAR_ENCODER_FP8 needs a CUDA GPU"):
        LineReader(
            model_ref.resolve(model_ref.parse(str(tiny_model))), device="cpu", dtype="float32", options=DecodeOptions(encoder_fp8=True)
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_new_tokens": 1, "min_new_tokens": 0, "forced_eos_token_id": 2},  # an empty reading, forced
        {"max_new_tokens": 6, "forced_bos_token_id": 7},
        {"max_new_tokens": 8, "min_new_tokens": 6, "begin_suppress_tokens": [5, 6, 7]},
        {"max_new_tokens": 5, "suppress_tokens": [4, 5, 6, 7, 8, 9, 10]},
        {"max_length": 7},
        {"no_repeat_ngram_size": 3},
        {"no_repeat_ngram_size": 2, "max_new_tokens": 16},
        {"repetition_penalty": 1.3},
        {"repetition_penalty": 0.8, "no_repeat_ngram_size": 3},
    ],
    ids=["forced-eos", "forced-bos", "begin-suppress", "suppress", "max-length", "ngram-3", "ngram-2", "penalty", "penalty-and-ngram"],
)
@pytest.mark.parametrize("graphs", ["off", "on"])
def test_the_rules_generate_applies_are_applied_alike(tiny_model: Path, print_lines: Path, overrides: dict, graphs: str) -> None:
    ours, theirs = engine(tiny_model, "auto", graphs), engine(tiny_model, "generate")
    settings = {**GREEDY, **overrides}
    assert ours.greedy.serves(settings)
    pixels = batch(ours, sorted(print_lines.glob("*.png"))[:8])
    decoded, eos = read_alike(ours, theirs, pixels, settings)
    if "no_repeat_ngram_size" in overrides or "repetition_penalty" in overrides:  # the rule changed what was read
        with torch.inference_mode():
            plain = ours.greedy.run(ours.to_device(pixels), GREEDY)
        assert until_the_end(plain.tokens, eos) != until_the_end(decoded.tokens, eos)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"max_new_tokens": 8, "min_new_tokens": 6, "begin_suppress_tokens": [5, 6, 7], "suppress_tokens": [36, 37, 38, 200]}],
    ids=["plain", "masks"],
)
def test_the_loop_over_vocabulary_chunks_chooses_what_generate_chooses(
    byte_model: Path, print_lines: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict
) -> None:
    """On a CPU the loop takes the vocabulary in cache-sized chunks; chunks of 37 columns (a test
    model's vocabulary fits one chunk at the real size) hold it to generate() across many edges."""
    monkeypatch.setattr(vocab_chunks, "CACHE_BYTES", 4 * 8 * 37)
    monkeypatch.setattr(vocab_chunks, "SMALLEST_CHUNK", 1)
    calls = []
    choose = vocab_chunks.ChunkedChoice.choose
    monkeypatch.setattr(vocab_chunks.ChunkedChoice, "choose", lambda self, *a: calls.append(len(self.starts)) or choose(self, *a))
    ours, theirs = engine(byte_model, "auto"), engine(byte_model, "generate")
    settings = {**GREEDY, **overrides}
    pixels = batch(ours, sorted(print_lines.glob("*.png"))[:8])
    decoded, _ = read_alike(ours, theirs, pixels, settings)
    assert calls and min(calls) > 10  # every step went through the chunks, many of them
    with torch.inference_mode():
        output = theirs.model.generate(pixel_values=theirs.to_device(pixels), **settings, output_logits=True, return_dict_in_generate=True)
    raw = torch.stack(output.logits, dim=1).float()
    steps = min(decoded.tokens.shape[1], raw.shape[1])  # the loop may run to its next look after generate() stops
    expected = raw[:, :steps].log_softmax(-1).gather(2, output.sequences[:, 1 : steps + 1, None]).squeeze(2)
    live = decoded.log_probs[:, :steps] != 0  # 0 after a row's end
    assert torch.allclose(decoded.log_probs[:, :steps][live], expected[live], atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [{"num_beams": 2}, {"do_sample": True}, {"bad_words_ids": [[5]]}, {"sequence_bias": {(5,): -1.0}}, {"encoder_no_repeat_ngram_size": 2}],
)
def test_settings_the_loop_does_not_follow_go_to_generate(tiny_model: Path, overrides: dict) -> None:
    ours = engine(tiny_model, "auto")
    settings = {**GREEDY, **overrides}
    assert not ours.greedy.serves(settings)
    assert ours.decoder_for(options(settings)) == "generate" and ours.describe(options(settings)).endswith(":generate")


def test_a_decoder_the_loop_does_not_know_is_left_to_generate() -> None:
    class Other:
        decoder = torch.nn.Linear(2, 2)

    assert GreedyLoop.of(Other()) is None
