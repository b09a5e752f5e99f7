"""The engine against the model card's loop, its confidence, and both processor layouts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pisar.images import ImageLimits, decode_line_image
from pisar.reader import LineReader, Reading
from tests.helpers.reading import read_outcomes, reader_for
from tests.helpers.reference import CardLoop

LIMITS = ImageLimits(max_pixels=89_478_485, min_side=4, max_side=16_384)


def before_decoding(engine: LineReader, check) -> None:
    """Run ``check`` on every batch the engine decodes, through whichever loop it uses (Pisar's, or generate())."""
    if engine.backend.decoder_for() == "greedy-loop":
        run = engine.backend.greedy.run

        def checked_run(pixel_values, overrides):  # wraps the real loop
            check(pixel_values)
            return run(pixel_values, overrides)

        engine.backend.greedy.run = checked_run
        return
    generate = engine.backend.model.generate

    def checked_generate(pixel_values, **kwargs):  # wraps the real generate
        check(pixel_values)
        return generate(pixel_values=pixel_values, **kwargs)

    engine.backend.model.generate = checked_generate


def recognize_files(engine: LineReader, paths: list[Path], batch_size: int) -> list[Reading]:
    pixels = [engine.prepare(decode_line_image(p.read_bytes(), LIMITS)) for p in paths]
    results: list[Reading] = []
    for start in range(0, len(pixels), batch_size):
        results.extend(read_outcomes(engine, np.stack(pixels[start : start + batch_size])))
    return results


@pytest.mark.slow
def test_batched_engine_matches_card_loop(tiny_model: Path, print_lines: Path, rgb_scans: Path) -> None:
    paths = sorted(print_lines.glob("*.png"))[:64] + sorted(rgb_scans.glob("*.jpg"))
    card = CardLoop(tiny_model)
    expected = [card.read(p).text for p in paths]
    got = recognize_files(reader_for(tiny_model), paths, batch_size=16)
    assert [r.text for r in got] == expected
    assert all(r.text for r in got), "min_new_tokens should force non-empty texts"


def test_confidence_is_a_probability_summary(tiny_model: Path, print_lines: Path) -> None:
    results = recognize_files(reader_for(tiny_model), sorted(print_lines.glob("*.png"))[:16], batch_size=8)
    for r in results:
        assert isinstance(r, Reading)
        assert r.token_count >= 4  # min_new_tokens of the test model
        assert 0.0 < r.min_token_prob <= r.confidence <= 1.0
    # Different lines get different confidences: the figure depends on the input.
    assert len({round(r.confidence, 6) for r in results}) > 1


@pytest.mark.parametrize("num_beams", [1, 3])
def test_confidence_is_geometric_mean_of_chosen_token_probabilities(tiny_model: Path, print_lines: Path, num_beams: int) -> None:
    """Recompute by teacher forcing the generated tokens through a plain forward pass: the same
    formula (softmax of raw logits, text tokens only) for greedy and beam search."""
    import torch

    path = sorted(print_lines.glob("*.png"))[3]
    card = CardLoop(tiny_model)
    pixel_values = card.processor(images=decode_line_image(path.read_bytes(), LIMITS), return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = card.model.generate(pixel_values, num_beams=num_beams)[0].tolist()
        logits = card.model(pixel_values=pixel_values, decoder_input_ids=torch.tensor([ids[:-1]])).logits[0]
    engine = reader_for(tiny_model)
    [got] = read_outcomes(engine, np.stack([engine.prepare(decode_line_image(path.read_bytes(), LIMITS))]), {"num_beams": num_beams})
    log_probs = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    special = set(card.processor.tokenizer.all_special_ids)
    text_lp = [float(lp) for tok, lp in zip(ids[1:], log_probs, strict=True) if tok not in special]
    assert got.text == card.processor.decode(ids, skip_special_tokens=True)
    assert got.token_count == len(text_lp)
    assert got.confidence == pytest.approx(math.exp(sum(text_lp) / len(text_lp)), rel=1e-4)
    assert got.min_token_prob == pytest.approx(math.exp(min(text_lp)), rel=1e-4)


@pytest.mark.parametrize("processor_class", [None, "TrOCRProcessorCustom"])
def test_legacy_layouts_load_and_read_the_same(tiny_model: Path, print_lines: Path, tmp_path: Path, processor_class: str | None) -> None:
    """Folders as older transformers saved them (preprocessor_config.json + tokenizer files, no
    processor_config.json), like the reference model's hub repo. With ``processor_class`` naming a
    card's own TrOCRProcessor subclass, AutoProcessor returns a bare tokenizer and Pisar assembles
    the processor itself, as the reference card does."""
    import json

    from transformers import AutoImageProcessor, AutoTokenizer

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, legacy / name)
    AutoImageProcessor.from_pretrained(tiny_model).save_pretrained(legacy)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(legacy)
    assert (legacy / "preprocessor_config.json").exists() and not (legacy / "processor_config.json").exists()
    if processor_class:
        for name in ("preprocessor_config.json", "tokenizer_config.json"):
            config = json.loads((legacy / name).read_text())
            config["processor_class"] = processor_class
            (legacy / name).write_text(json.dumps(config))
    paths = sorted(print_lines.glob("*.png"))[:8]
    modern = recognize_files(reader_for(tiny_model), paths, batch_size=8)
    engine = reader_for(legacy)
    old = recognize_files(engine, paths, batch_size=8)
    assert [r.text for r in old] == [r.text for r in modern]
    assert engine.backend.processor.image_processor.size == {"height": 182, "width": 1022}
    assert type(engine.backend.processor).__name__ == ("LineProcessor" if processor_class else "TrOCRProcessor")


@pytest.mark.parametrize("decoder", ["auto", "generate"])
def test_failing_batch_is_split_to_isolate_the_bad_line(tiny_model: Path, print_lines: Path, decoder: str) -> None:
    """A batch that raises is bisected; only the line that still fails alone is an error."""
    from pisar.errors import GenerationFailed

    engine = reader_for(tiny_model, decoder)
    paths = sorted(print_lines.glob("*.png"))[:4]
    pixels = engine.backend.to_device(np.stack([engine.prepare(decode_line_image(p.read_bytes(), LIMITS)) for p in paths])).numpy()
    good = read_outcomes(engine, pixels)  # float input (already normalized) is accepted as it is
    pixels[2, 0, 0, 0] = np.nan  # a poisoned input: decoding is made to raise on it below

    def poisoned(pixel_values) -> None:
        if bool(pixel_values.isnan().any()):
            raise RuntimeError("poisoned line")

    before_decoding(engine, poisoned)
    results = read_outcomes(engine, pixels)
    assert isinstance(results[2], GenerationFailed)
    assert [r.text for i, r in enumerate(results) if i != 2] == [r.text for i, r in enumerate(good) if i != 2]


@pytest.mark.parametrize("decoder", ["auto", "generate"])
def test_out_of_memory_halves_the_batch_for_good_and_loses_no_line(tiny_model: Path, print_lines: Path, decoder: str) -> None:
    """An injected OOM (no GPU here to run out of) above 4 lines: the batch goes on in fours, and so do the next ones."""
    import torch

    engine = reader_for(tiny_model, decoder)
    paths = sorted(print_lines.glob("*.png"))[:16]
    pixels = np.stack([engine.prepare(decode_line_image(p.read_bytes(), LIMITS)) for p in paths])
    expected = [r.text for r in read_outcomes(engine, pixels)]
    sizes = []

    def fits(pixel_values) -> None:
        sizes.append(len(pixel_values))
        if len(pixel_values) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")

    before_decoding(engine, fits)
    assert [r.text for r in read_outcomes(engine, pixels)] == expected  # 16 -> OOM, 8 -> OOM, then 4 x 4
    assert engine.limit.max_batch == 4 and sizes == [16, 8, 4, 4, 4, 4]
    sizes.clear()
    assert [r.text for r in read_outcomes(engine, pixels)] == expected
    assert sizes == [4, 4, 4, 4]  # the next batch no longer tries what did not fit
