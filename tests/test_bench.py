"""Every benchmark's documented quick form runs at a small size and prints the JSON keys the docs quote.

Functional checks that the benchmarks still run and measure what they say (the same texts both
ways, every line read, counts that add up), never timing tests: the figures come from running them
at full size (docs/performance.md), and no assertion here compares two speeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.bench

KEYS = {
    "seed_loop_lines_per_s",
    "hf_batched_lines_per_s",
    "pisar_lines_per_s",
    "speedup_vs_seed",
    "speedup_vs_hf",
    "input_wait_share",
    "peak_memory_mb",
    "gpu_seconds_per_1000_lines",
    "device",
    "dtype",
    "batch_size",
    "versions",
    "parity_fp32",
}


def run_bench(script: str, args: list[str], out: Path, timeout: int = 600) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """Run ``bench/<script>`` as a user would, with ``--out out``; the JSON it wrote, and the run."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, "--out", str(out)], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text()), run


def test_engine_benchmark_runs_and_reports(tmp_path: Path) -> None:
    args = ["--standin", "small", "--lines", "16", "--seed-lines", "4", "--batch-size", "8", "--rounds", "2", "--device", "cpu"]
    written, run = run_bench("engine.py", args, tmp_path / "bench.json")
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    assert printed == written
    assert KEYS <= set(printed)
    assert printed["parity_fp32"] is True  # the engine's fp32 path reads what the model card's loop reads
    assert printed["fast_preprocessing"] is True and printed["sdpa_decoder_layers"] == 4
    assert printed["device"].startswith("cpu") and (printed["dtype"], printed["batch_size"]) == ("float32", 8)


def test_run_rate_benchmark_times_the_real_command_and_loses_no_line(tmp_path: Path) -> None:
    """`bench/run_rate.py`: `pisar run` in its own process at two sizes, against plain batching."""
    printed, _ = run_bench("run_rate.py", ["--lines", "4", "12", "--rounds", "1"], tmp_path / "run.json")
    assert {"pisar_run_marginal_lines_per_s", "hf_batched_lines_per_s", "marginal_vs_hf"} <= set(printed)
    assert printed["every_line_recorded"] is True and printed["lines"] == [4, 12]
    (run,) = printed["runs"]
    assert (run["pisar_run_4"]["ok"], run["pisar_run_12"]["ok"]) == (4, 12)


def test_profile_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`bench/profile_generate.py` splits a batch's time into encoder, decoder and the engine's own work."""
    out = tmp_path / "profile.json"
    printed, _ = run_bench("profile_generate.py", ["--standin", "small", "--batches", "2", "--repeats", "1", "--trace"], out)
    assert [row["batch"] for row in printed["rows"]] == [2]
    (row,) = printed["rows"]
    assert {"encoder_s", "decoder_s", "generate_s", "engine_s", "engine_overhead_share"} <= set(row)  # what docs/performance.md quotes
    assert row["decoder_s"] == pytest.approx(row["generate_s"] - row["encoder_s"], abs=2e-4)  # the decoder is generate() less the encoder
    assert printed["tokens"] == 40 and printed["device"].startswith("cpu")
    assert "aten::" in out.with_suffix(".ops.txt").read_text()  # the profiler's operator table


def test_catalog_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`bench/catalog.py` as documented (no --commit-shards) on a throwaway database at 20,000 generated
    lines: fewer than 400 shards are queued, so it commits all but one of them, then claims, status, plans."""
    out = tmp_path / "catalog.json"
    printed, _ = run_bench("catalog.py", ["--lines", "20000", "--samples", "1"], out)
    # 79 shards, 71 done (18,176 lines, one error in 1,000: 19); of the 8 queued, 7 full ones committed as ok
    assert (printed["commit_shards"], printed["lines_committed"]) == (7, 7 * 256)
    assert printed["status_lines"] == {"pending": 20000 - 18176 - 7 * 256, "ok": 18176 - 19 + 7 * 256, "error": 19}
    assert {"lines_per_s", "claim_ms", "status_ms", "commit_ms_per_shard"} <= set(printed)  # what docs/performance.md quotes
    assert "uq_line_campaign_key" in printed["plans"]["export_first_page"]["scans"]  # byte-order keys: no sort of every line
    assert "== claim" in out.with_suffix(".plans.txt").read_text()


def test_catalog_benchmark_says_which_sizes_it_needs(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "catalog.py"),
            "--lines",
            "20000",
            "--commit-shards",
            "50",
            "--out",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode != 0 and "--commit-shards 50 needs 51 queued shards; the database holds 8" in run.stderr


def test_precision_benchmark_reads_the_samples_both_ways(tmp_path: Path) -> None:
    """`python bench/precision.py`, the documented quick form: the demo model on its 20 held-out sample lines."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "precision.py"), "--device", "cpu"], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"cer_fp32", "cer_half", "identical_share", "cer_delta_points"} <= set(printed)  # what docs/performance.md quotes
    assert (printed["lines"], printed["device"], printed["half"]) == (20, "cpu", "bfloat16")
    assert printed["cer_fp32"] < 0.15 and printed["identical_share"] >= 0.5  # the demo model reads its samples, in both dtypes


def test_batching_benchmark_runs_and_reports(tmp_path: Path) -> None:
    printed, _ = run_bench("batching.py", ["--lines", "32", "--rounds", "1", "--device", "cpu"], tmp_path / "batching.json")
    assert printed["same_texts"] is True and printed["lines"] == 32
    assert 0 <= printed["width_groups_wasted_step_share"] <= printed["key_order_wasted_step_share"] < 1


def test_listing_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`bench/listing.py` against a throwaway SeaweedFS, Postgres database and Redis queue, at 300 keys."""
    printed, _ = run_bench("listing.py", ["--keys", "300", "--high-water", "4"], tmp_path / "listing.json")
    quoted = {
        "keys_per_s",
        "peak_rss_mb",
        "keys_per_s_boto3",
        "vs_boto3",
        "list_cpu_seconds",
        "list_cpu_seconds_boto3",
    }  # the docs quote them
    assert quoted <= set(printed) and printed["client"] == "obstore"
    assert printed["keys"] == 300 and f"300 lines in {printed['shards']} shards" in printed["submit_said"]
    assert printed["shards"] > 4 and printed["queued_shards"] == 4, "Redis holds the high-water mark, the rest wait in the catalog"


def test_storage_benchmark_reads_through_both_clients_and_reports(tmp_path: Path) -> None:
    """The documented quick form; the bench itself checks that both clients read every object whole and list every key."""
    printed, _ = run_bench("storage.py", ["--lines", "120", "--rounds", "1"], tmp_path / "storage.json")
    quoted = {
        "boto3_cpu_us_per_read",
        "obstore_cpu_us_per_read",
        "obstore_vs_boto3_cpu_per_read",
        "boto3_reads_per_s",
        "obstore_reads_per_s",
    }
    quoted |= {"list_boto3_paginator_keys_per_s", "list_obstore_keys_per_s", "list_obstore_vs_paginator"}  # docs/performance.md
    assert quoted <= set(printed) and (printed["lines"], printed["rounds"]) == (120, 1)


def test_pages_benchmark_reads_the_same_lines_both_ways(tmp_path: Path) -> None:
    """`bench/pages.py` small: 2 pages of 8 pasted real lines, folder source; a box crop reads every line alike."""
    printed, _ = run_bench("pages.py", ["--pages", "2", "--lines-per-page", "8", "--rounds", "1"], tmp_path / "pages.json")
    assert {"line_mode_lines_per_s", "page_mode_lines_per_s", "page_vs_line", "identical_text_share"} <= set(printed)
    assert (printed["lines"], printed["crop"], printed["identical_text_share"]) == (16, "box", 1.0)


def test_encoder_benchmark_records_a_variant_this_machine_refuses(tmp_path: Path) -> None:
    """`bench/encoder.py` eager only (compiling takes 5-20 s here), with FP8 asked for: refused on a CPU, and said so."""
    printed, _ = run_bench("encoder.py", ["--batch", "2", "--repeats", "1", "--no-compile", "--fp8"], tmp_path / "encoder.json")
    assert "compute capability 8.9" in printed["fp8_refused"]
    (run,) = printed["runs"]
    assert (run["batch"], run["eager_describe"]) == (2, "cpu:float32:greedy-loop")


def test_decode_step_benchmark_runs_and_reports(tmp_path: Path) -> None:
    printed, _ = run_bench("decode_step.py", ["--batch", "8", "--repeats", "1"], tmp_path / "decode.json")
    quoted = {"generate_us_per_step", "loop_us_per_step", "graphed_us_per_step", "loop_vs_generate_per_step", "graphed_vs_loop_per_step"}
    assert quoted <= set(printed) and printed["graphs_captured"] is False  # on a CPU the fixed-shape steps run uncaptured
    assert printed["same_tokens"] is True and printed["graphed_same_tokens"] is True
    assert printed["steps"] == 40  # the stand-in forces its 40 steps


def test_pipeline_benchmark_runs_the_whole_path_and_reports(tmp_path: Path) -> None:
    """`bench/pipeline.py` at 96 lines: real SeaweedFS, Redis, Postgres, `pisar submit` and `pisar feed`,
    a real worker with the stub engine, then with the demo model, and the bare engine beside them."""
    printed, _ = run_bench(
        "pipeline.py", ["--lines", "96", "--shard-size", "24", "--workers", "1"], tmp_path / "pipeline.json", timeout=900
    )
    assert {"stub_lines_per_s", "model_lines_per_s", "bare_engine_lines_per_s", "model_vs_bare", "redis_bytes_per_queued_shard"} <= set(
        printed
    )
    assert printed["lines"] == 96 and printed["error_lines"] == 0 and printed["workers"] == 1
    assert printed["shards"] == 5  # folders of 40, 40 and 16 lines in shards of 24
    assert printed["model_vs_bare"] == pytest.approx(printed["model_lines_per_s"] / printed["bare_engine_lines_per_s"], abs=0.01)
    assert printed["redis_bytes_per_queued_shard"] > 0 and printed["queued_shards_measured"] == 96  # one-line shards, all queued


def test_detect_benchmark_reports_detection_against_reading_per_page(tmp_path: Path) -> None:
    """`bench/detect.py` on the Transkribus page alone: both costs per page, their ratio, the sizing rule, the quality."""
    args = ["--pasted", "0", "--polygon-workers", "2", "--no-warm"]  # the pool path, one blla pass (about 30 s here)
    printed, _ = run_bench("detect.py", args, tmp_path / "detect.json")
    assert printed["pages"] == 1 and printed["lines"] == 51
    assert printed["detect_cpu_s_per_page"] > printed["read_cpu_s_per_page"] > 0
    ratio = printed["detect_cpu_s_per_page"] / printed["read_cpu_s_per_page"]
    assert printed["detect_to_read_cpu_ratio"] == pytest.approx(ratio, rel=0.01)
    assert printed["detect_network_s_per_page"] > 0 and printed["detect_postprocess_s_per_page"] > 0
    assert printed["quality"]["transkribus.jpg"]["matched"] >= 40


def test_iiif_fetch_benchmark_counts_requests_and_bytes_per_line_both_ways(tmp_path: Path) -> None:
    """`bench/iiif_fetch.py --runs 1`: whole pages against region requests, through the reference IIIF server."""
    printed, _ = run_bench("iiif_fetch.py", ["--runs", "1"], tmp_path / "iiif.json")
    for name, lines in (("kraken", 44), ("pasted", 24)):
        page, region = printed["pages"][name]["page"], printed["pages"][name]["region"]
        assert page["lines"] == region["lines"] == lines
        assert page["requests"] == 2 and region["requests"] == lines + 1  # info.json, then the page or each line's region
        assert page["bytes"] > 0 and region["bytes"] > 0
    quality = printed["quality"]  # the demo model on the pasted page's held-out lines: file, PNG and JPEG pages
    assert quality["lines"] == 24 and set(quality["cer"]) == {"file", "iiif_png", "iiif_jpg"}
    assert (
        quality["cer"]["iiif_png"] == quality["cer"]["file"] and quality["same_text_as_file"]["iiif_png"] == 24
    )  # lossless: the file's pixels
