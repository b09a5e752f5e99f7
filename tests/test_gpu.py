"""On a CUDA device: the engine reads as the model card's CPU loop does, and the CUDA-graph decode
steps choose what the plain loop chooses. Skipped (marker ``gpu``) where torch sees no CUDA device;
the same code paths run uncaptured on the CPU in tests/test_greedy.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pisar import model_ref
from pisar.images import ImageLimits, decode_line
from pisar.reader import DecodeOptions, LineReader
from tests.helpers.reading import options, read_outcomes
from tests.helpers.reference import CardLoop, assert_same_texts

pytestmark = pytest.mark.gpu

LIMITS = ImageLimits(89_478_485, 4, 16_384)
GREEDY = {"num_beams": 1, "do_sample": False}


def cuda_engine(folder: Path, graphs: str) -> LineReader:
    return LineReader(model_ref.resolve(model_ref.parse(str(folder))), device="cuda", dtype="float32", options=DecodeOptions(graphs=graphs))


def pixels_of(engine: LineReader, paths: list[Path]) -> np.ndarray:
    return np.stack([engine.prepare(decode_line(p.read_bytes(), LIMITS).line) for p in paths])


def test_the_engine_on_cuda_reads_as_the_card_loop_on_the_cpu(tiny_model: Path, print_lines: Path) -> None:
    paths = sorted(print_lines.glob("*.png"))[:48]
    engine = cuda_engine(tiny_model, "auto")
    assert engine.describe(options(GREEDY)).endswith(":greedy-loop+graphs")  # CUDA graphs are the default on a GPU
    got = []
    for start in range(0, len(paths), 16):
        got.extend(read_outcomes(engine, pixels_of(engine, paths[start : start + 16]), GREEDY))
    card = CardLoop(tiny_model)
    keyed = {p.name: p for p in paths}
    assert_same_texts(card, {p.name: card.read(p) for p in paths}, {p.name: r.text for p, r in zip(paths, got, strict=True)}, keyed)


def until_the_end(tokens: torch.Tensor, eos: int) -> list[list[int]]:
    return [row[: row.index(eos) + 1] if eos in row else row for row in tokens.tolist()]


def test_captured_steps_choose_what_the_plain_loop_chooses(tiny_model: Path, print_lines: Path) -> None:
    paths = sorted(print_lines.glob("*.png"))[:40]
    captured, plain = cuda_engine(tiny_model, "on"), cuda_engine(tiny_model, "off")
    eos = plain.backend.model.generation_config.eos_token_id
    for start, size in ((0, 12), (12, 28)):  # bucket 16, then a larger batch: new buffers, new graphs
        pixels = pixels_of(plain, paths[start : start + size])
        with torch.inference_mode():
            ours = captured.backend.greedy.run(captured.backend.to_device(pixels), GREEDY)
            theirs = plain.backend.greedy.run(plain.backend.to_device(pixels), GREEDY)
        assert until_the_end(ours.tokens, eos) == until_the_end(theirs.tokens, eos), start
