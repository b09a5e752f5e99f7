"""How lines become batches: width-grouped batches on the demo model, and the batch size from free memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pisar.images import ImageLimits
from pisar.reader import GenerationOptions, LineReader
from pisar.reader.memory import CPU_BATCH, MemoryCost
from pisar.settings import Settings
from pisar.sources import Cutting, line_source
from pisar.storage import LocalStorage
from pisar.worker.batches import read_lines
from tests.helpers.paths import DEMO_MODEL
from tests.helpers.reading import reader_for


def read_shard(engine: LineReader, storage: LocalStorage, keys: list[str], length_groups: int) -> tuple[dict[str, str | None], float]:
    """The worker's own path over ``keys``; returns texts and the share of decoder steps paid for finished lines."""
    settings = Settings(batch_size=8, fetch_threads=4, length_groups=length_groups, device="cpu", dtype="float32")
    prepare = line_source("lines").preparer(storage, keys, engine.prepare, Cutting(ImageLimits.from_settings(settings)))
    before_paid, before_useful = engine.steps.paid, engine.steps.useful
    with ThreadPoolExecutor(settings.fetch_threads) as pool:
        read = read_lines(keys, prepare, engine, GenerationOptions(), settings, pool)
    paid, useful = engine.steps.paid - before_paid, engine.steps.useful - before_useful
    assert [item.key for item, _ in read.lines] == sorted(keys), "results go back to key order"
    return {item.key: outcome.text for item, outcome in read.lines}, 1 - useful / paid


@pytest.mark.slow
def test_width_groups_cut_decoder_work_on_finished_lines_without_changing_a_text(print_lines: Path) -> None:
    """The demo model stops each line at its end token; under generate() a batch runs until its longest line ends.

    Grouping 8 batches' lines by width puts lines of like length together: the same texts, and
    far fewer steps spent on lines that have already ended.
    """
    storage = LocalStorage(print_lines)
    keys = sorted(k for k in storage.iter_keys() if k.endswith(".png"))[:128]
    engine = reader_for(DEMO_MODEL, decoder="generate")
    in_key_order, waste_plain = read_shard(engine, storage, keys, length_groups=1)
    grouped, waste_grouped = read_shard(engine, storage, keys, length_groups=8)
    assert grouped == in_key_order
    assert waste_grouped < 0.8 * waste_plain, (waste_plain, waste_grouped)


@pytest.mark.slow  # the demo model reads 32 real lines twice, about 9 s
def test_the_greedy_loop_wastes_little_on_finished_lines_even_in_key_order(print_lines: Path) -> None:
    """Pisar's loop drops a row a few steps after its end, so mixed lengths cost little even ungrouped,
    and it reads the same texts as generate()."""
    storage = LocalStorage(print_lines)
    keys = sorted(k for k in storage.iter_keys() if k.endswith(".png"))[:32]
    texts_loop, waste_loop = read_shard(reader_for(DEMO_MODEL), storage, keys, length_groups=1)
    texts_generate, waste_generate = read_shard(reader_for(DEMO_MODEL, decoder="generate"), storage, keys, length_groups=1)
    assert texts_loop == texts_generate
    assert waste_loop < 0.5 * waste_generate, (waste_loop, waste_generate)


def test_memory_cost_is_solved_from_two_probe_batches() -> None:
    """The CUDA probe's arithmetic (the probe itself needs a GPU, which these machines lack)."""
    measured: list[int] = []

    def peak(lines: int) -> int:
        measured.append(lines)
        return 300 * 2**20 + lines * 40 * 2**20  # 300 MiB of workspace, 40 MiB a line

    cost = MemoryCost.measure(peak)
    assert measured == [2, 8]
    assert cost == MemoryCost(fixed=300 * 2**20, per_line=40 * 2**20)
    free = 20 * 2**30
    assert cost.lines_that_fit(free, share=0.85, cap=4096) == 424  # (17408 - 300) / 40 = 427.7 -> 427 -> a multiple of 8
    assert cost.lines_that_fit(free, share=0.85, cap=100) == 96
    assert cost.lines_that_fit(free, share=0.85, cap=5) == 5
    assert cost.lines_that_fit(200 * 2**20, share=0.85, cap=512) == 1, "never below one line; an OOM then splits nothing further"


def test_batch_size_on_cpu_is_the_setting_or_the_cpu_default(tiny_model: Path) -> None:
    engine = reader_for(tiny_model)
    greedy = GenerationOptions.greedy()
    assert engine.batch_size(greedy, requested=None, cap=512, share=0.85) == CPU_BATCH
    assert engine.batch_size(greedy, requested=48, cap=512, share=0.85) == 48
    assert engine.batch_size(greedy, requested=None, cap=4, share=0.85) == 4


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_batch_size_setting_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISAR_BATCH_SIZE", value)
    with pytest.raises(ValueError, match="batch_size"):
        Settings()
