"""The reader library through its public seams: a back-end of its own (no model, no torch), the
batch splitting every back-end gets, generation options as a campaign stores them, and a whole
`pisar run` on a back-end named in a setting."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pisar.errors import FatalError, GenerationFailed
from pisar.model_ref import ModelRef
from pisar.reader import GenerationOptions, LineReader, Reading, register_backend
from tests.helpers.cli import read_jsonl, run_pisar
from tests.helpers.paths import lines_folder
from tests.helpers.reader_backends import Scripted

SCRIPTED = "tests.helpers.reader_backends:Scripted"


@pytest.fixture
def reader() -> LineReader:
    register_backend("scripted", Scripted)
    return LineReader(ModelRef("any-model", None), device="cpu", dtype="float32", backend="scripted")


def lines(count: int) -> np.ndarray:
    return np.stack([np.full((1, 4, 16), value, dtype=np.float32) for value in np.linspace(0.1, 0.9, count)])


def test_a_backend_is_one_class_and_one_registration(reader: LineReader) -> None:
    """A back-end answers ``Backend``'s few questions; the reader hands back a reading per line in
    order, and the provenance it read with: the back-end's description and the options."""
    options = GenerationOptions.greedy(max_new_tokens=12)
    batch = reader.read(np.stack([reader.prepare(Image.new("L", (200, 50), shade)) for shade in (0, 128, 255)]), options)
    assert [r.text for r in batch] == ["0.000", "0.502", "1.000"]
    assert all(isinstance(r, Reading) for r in batch)
    assert batch.provenance.options == options and batch.provenance.reader.startswith("scripted:float32:")
    assert batch.outcomes[1].words == [("0.502", 0.5)]  # no per-word confidence from this back-end: the line's
    assert Reading("a bc", 0.9, 0.8, 3, word_confidences=(0.7, 0.95)).words == [("a", 0.7), ("bc", 0.95)]
    assert reader.batch_size(options) == 32  # what the back-end fitted to its device


def test_out_of_memory_halves_the_batch_for_good_in_any_backend(reader: LineReader) -> None:
    pixels = lines(10)
    expected = [f"{float(v):.3f}" for v in np.linspace(0.1, 0.9, 10)]
    assert [r.text for r in reader.read(pixels)] == expected  # 10 -> OOM, 5 -> OOM, then 3 + 2 ...
    assert reader.limit.max_batch == 2 and reader.backend.batches[:3] == [10, 5, 2]
    reader.backend.batches.clear()
    assert [r.text for r in reader.read(pixels)] == expected
    assert set(reader.backend.batches) == {2}  # the next batch no longer tries what did not fit


def test_a_line_the_model_cannot_read_fails_alone(reader: LineReader) -> None:
    pixels = lines(4)
    pixels[2] = Scripted.poisoned
    outcomes = reader.read(pixels).outcomes
    assert isinstance(outcomes[2], GenerationFailed) and "cannot read" in str(outcomes[2])
    assert [isinstance(o, Reading) for o in outcomes] == [True, True, False, True]


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_beams": 1, "do_sample": False, "max_new_tokens": 64},  # what `pisar submit` stores
        {"num_beams": 2, "do_sample": False},
        {},
        {"max_new_tokens": 6, "no_repeat_ngram_size": 3, "suppress_tokens": [4, 5]},
    ],
)
def test_generation_options_keep_a_campaigns_overrides_exactly(overrides: dict) -> None:
    options = GenerationOptions.from_overrides(overrides)
    assert options.overrides() == overrides and list(options.overrides()) == list(overrides)
    assert GenerationOptions.of_campaign({"overrides": overrides, "effective": {}}) == options


def test_submit_stores_the_options_a_campaign_always_stored() -> None:
    assert GenerationOptions.greedy(None, 1).overrides() == {"num_beams": 1, "do_sample": False}
    assert GenerationOptions.greedy(160, 3).overrides() == {"num_beams": 3, "do_sample": False, "max_new_tokens": 160}


def test_an_unknown_backend_is_the_nodes_failure() -> None:
    with pytest.raises(FatalError, match="unknown reader back-end 'onnx'"):
        LineReader(ModelRef("any-model", None), backend="onnx")
    with pytest.raises(FatalError, match="cannot be imported"):
        LineReader(ModelRef("any-model", None), backend="no.such.module:Backend")


def test_a_campaign_runs_whole_on_a_backend_named_in_a_setting(
    embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """``PISAR_READER_BACKEND=module:Class``: a back-end in a package of its own runs a campaign with no
    change to Pisar, and a back-end that needs no torch runs in a process that never imports it."""
    env = {k: v for k, v in embedded_env.items() if k != "PISAR_TORCH_THREADS"}
    env |= {"PISAR_READER_BACKEND": SCRIPTED, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    source = lines_folder(tmp_path, print_lines, 6)
    out = tmp_path / "out.jsonl"
    done = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "scripted", "--output", str(out)], env)
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert len(records) == 6 and all(r["status"] == "ok" and float(r["text"]) > 0 for r in records)
    with sqlite3.connect(env["PISAR_CATALOG_PATH"]) as catalog:
        engines = {row[0] for row in catalog.execute("SELECT engine FROM shard")}
    assert engines == {"scripted:auto:no-torch"}  # each shard's provenance, written by the back-end itself
