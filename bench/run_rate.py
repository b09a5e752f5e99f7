"""`pisar run` end to end against plain Hugging Face batching: the marginal lines/s of the whole embedded job.

    python bench/run_rate.py                       # small stand-in, 64 and 320 lines, 3 rounds, CPU
    python bench/run_rate.py --lines 128 1024 --device cuda --standin large

Each round runs the real command, ``pisar run FOLDER -m STANDIN`` in a fresh process with its own
SQLite catalog and results file, on a folder of ``--lines`` real line PNGs each (the smaller first
or second, alternating), and then reads the larger folder with plain Hugging Face batching in this
process (row (b) of bench/engine.py: the processor on PIL images, generate() in batches, the same
40 forced tokens the stand-in's generation config asks for). A run's fixed cost (imports, model
load, catalog set-up, export) is the same at both sizes, so the marginal rate, the extra lines over
the extra seconds, is what the job sustains once it runs: listing, sharding, fetching, decoding,
preprocessing, the engine, the catalog's writes and the export of every line included. The JSON has
both rates (median over rounds), their ratio, and each run's counts, so that a run that lost a line
shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from engine import HFBatched, line_files, standin  # row (b) and the stand-in, as bench/engine.py builds them
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))
from infra.local_services import unconfigured_env

TOKENS = 40  # the bench stand-ins' forced length (pisar.random_model)
PISAR = Path(sys.executable).parent / "pisar"  # the installed command, beside this interpreter (make setup)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["small", "large"], default="small")
    parser.add_argument("--lines", type=int, nargs=2, default=[64, 320], metavar=("FEW", "MANY"), help="the two folder sizes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=0, help="plain batching's lines per generate call (0: 64 on GPU, 16 on CPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--source", type=Path, default=PRINT_LINES, help="folder of real line PNGs")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-run-rate.json")
    return parser.parse_args(argv)


def folder_of(files: list[Path], target: Path) -> Path:
    """``files`` copied into ``target`` under distinct names (a short source repeats)."""
    target.mkdir(parents=True)
    for number, path in enumerate(files):
        shutil.copyfile(path, target / f"{number:06d}-{path.name}")
    return target


def pisar_run(folder: Path, model: Path, workdir: Path, name: str, device: str) -> dict[str, object]:
    """One `pisar run` in a fresh process: its wall seconds and what its results file holds."""
    results = workdir / f"{name}.jsonl"
    env = unconfigured_env()
    env |= {"PISAR_CATALOG_PATH": str(workdir / f"{name}.db"), "PISAR_DEVICE": device}
    command = [str(PISAR), "run", str(folder), "-m", str(model), "-n", name, "-o", str(results)]
    started = time.perf_counter()
    run = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"bench: pisar run failed ({run.returncode}): {run.stderr[-2000:]}")
    records = [json.loads(line) for line in results.read_text().splitlines()]
    return {"seconds": round(seconds, 2), "records": len(records), "ok": sum(r["status"] == "ok" for r in records)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar.reader.devices import pick_device

    if not PISAR.exists():
        raise SystemExit(f"bench: no {PISAR}; run it with the project's interpreter (make setup, then .venv/bin/python)")
    few, many = sorted(args.lines)
    if few < 1 or few == many:
        raise SystemExit("bench: --lines needs two different positive sizes")
    device = pick_device(args.device)
    batch_size = args.batch_size or (64 if device.type == "cuda" else 16)
    workdir = Path(tempfile.mkdtemp(prefix="pisar-bench-run-"))
    model = standin(args.standin, REPO / "build")
    files = line_files(args.source, many)
    folders = {few: folder_of(files[:few], workdir / f"lines-{few}"), many: folder_of(files, workdir / f"lines-{many}")}
    hf = HFBatched(model, TOKENS, device, batch_size)
    hf.run(files[:batch_size])  # warm-up
    runs, marginal, plain = [], [], []
    try:
        for number in range(args.rounds):
            order = [few, many] if number % 2 == 0 else [many, few]
            timed = {size: pisar_run(folders[size], model, workdir, f"r{number}-{size}", device.type) for size in order}
            plain.append(many / hf.run(files))
            marginal.append((many - few) / (timed[many]["seconds"] - timed[few]["seconds"]))
            runs.append({"round": number, **{f"pisar_run_{size}": timed[size] for size in order}, "hf_lines_per_s": round(plain[-1], 2)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [m / p for m, p in zip(marginal, plain, strict=True)]
    figures = {
        "standin": args.standin,
        "device": f"{device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device),
        "lines": [few, many],
        "rounds": args.rounds,
        "hf_batch_size": batch_size,
        "pisar_run_marginal_lines_per_s": round(statistics.median(marginal), 2),
        "hf_batched_lines_per_s": round(statistics.median(plain), 2),
        "marginal_vs_hf": round(statistics.median(ratios), 3),
        "every_line_recorded": all(r[f"pisar_run_{size}"]["records"] == size for r in runs for size in (few, many)),
        "runs": runs,
    }
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
