"""The encoder alone, as the engine can run it: eager, compiled (PISAR_COMPILE_ENCODER), FP8 (PISAR_ENCODER_FP8).

    python bench/encoder.py                                  # small stand-in, batch 8, eager and compiled
    python bench/encoder.py --standin large --batch 128 512 --device cuda --dtype bfloat16 --fp8

Each variant is its own engine on the same random stand-in (``pisar.random_model``), loaded through
the engine's own code (pisar/reader/encoder_variants.py), timed on the same random pixels in rotating order
after a warm-up that pays for compilation (reported apart as ``compile_s``). The JSON has lines/s
per variant and batch, each variant's ratio to eager, and the largest difference of its encoder
states from eager's, relative to their largest magnitude. Whether a variant may become a default is
decided on a GPU (bench/gpu.sh) and, for FP8, by CER on real lines (bench/precision.py --fp8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import REPO  # bench/ is on sys.path when a script here runs
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["small", "large"], default="small")
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-compile", action="store_true", help="eager only (and FP8 when asked)")
    parser.add_argument("--fp8", action="store_true", help="also the FP8 encoder (CUDA, compute capability 8.9+, torchao)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-encoder.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar import model_ref
    from pisar.errors import FatalError
    from pisar.random_model import build_random_model
    from pisar.reader import DecodeOptions, GenerationOptions
    from pisar.reader.torch_backend import TorchBackend

    folder = build_random_model(Path(tempfile.mkdtemp(prefix="encoder-")) / "standin", ["Въ лѣто"], preset=f"bench-{args.standin}")
    ref = model_ref.resolve(model_ref.parse(str(folder)))
    variants = {"eager": DecodeOptions()}
    if not args.no_compile:
        variants["compiled"] = DecodeOptions(compile_encoder=True)
    if args.fp8:
        variants["fp8"] = DecodeOptions(encoder_fp8=True)
    engines, refused = {}, {}
    for name, options in variants.items():
        try:
            engines[name] = TorchBackend(ref, device=args.device, dtype=args.dtype, options=options)
        except FatalError as exc:  # FP8 where the GPU or torchao lacks it: recorded, the rest measured
            refused[f"{name}_refused"] = str(exc)
    device = engines["eager"].device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    figures: dict[str, object] = {
        "standin": args.standin,
        "device": str(device),
        "dtype": args.dtype,
        "repeats": args.repeats,
        **refused,
        "runs": [],
    }
    for batch in args.batch:
        pixels = torch.rand((batch, 3, 182, 1022), generator=torch.Generator().manual_seed(batch)).to(device, getattr(torch, args.dtype))
        row: dict[str, object] = {"batch": batch}
        states, timings = {}, {name: [] for name in engines}
        with torch.inference_mode():
            for name, engine in engines.items():  # warm-up: compilation happens here
                sync()
                started = time.perf_counter()
                states[name] = engine.model.encoder(pixel_values=pixels).last_hidden_state.float()
                sync()
                row[f"{name}_first_call_s"] = round(time.perf_counter() - started, 3)
            names = list(engines)
            for repeat in range(args.repeats):
                for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                    sync()
                    started = time.perf_counter()
                    engines[name].model.encoder(pixel_values=pixels)
                    sync()
                    timings[name].append(time.perf_counter() - started)
        scale = float(states["eager"].abs().max())
        for name, runs in timings.items():
            row[f"{name}_lines_per_s"] = round(batch / statistics.median(runs), 1)
            row[f"{name}_vs_eager"] = round(row[f"{name}_lines_per_s"] / row["eager_lines_per_s"], 3)
            row[f"{name}_max_rel_diff"] = round(float((states[name] - states["eager"]).abs().max()) / scale, 6)
            row[f"{name}_describe"] = engines[name].describe(GenerationOptions(num_beams=1))
        figures["runs"].append(row)
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
