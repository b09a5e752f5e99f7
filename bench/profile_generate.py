"""Where one batch's accelerator time goes: the encoder, the decoder's token steps, and the engine's own work.

    python bench/profile_generate.py                    # reference-size stand-in, batches of 64 and 512
    python bench/profile_generate.py --standin small --batches 16

For each batch size, on real lines preprocessed the worker's way, times (median of ``--repeats``):
the encoder alone, plain ``generate``, and ``TorchBackend.read`` (copy, generate, confidence and
flags). ``decoder_s`` is generate minus encoder. Prints one JSON object; with ``--trace`` the
profiler's top operators for one engine batch go to ``<out>.ops.txt``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path
from engine import fixed_length, line_files, standin, versions
from worker_path import report, synchronize


def timed(run: Any, device: Any, repeats: int) -> float:
    """Median seconds of ``run()`` after one warm-up."""
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["large", "small"], default="large")
    parser.add_argument("--model", type=Path, help="a real model folder instead of a stand-in")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trace", action="store_true", help="profile one engine batch of the largest size")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-profile.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from pisar.images import ImageLimits, decode_line
    from pisar.model_ref import ModelRef
    from pisar.reader import GenerationOptions
    from pisar.reader.torch_backend import TorchBackend

    model_dir = args.model or standin(args.standin, REPO / "build")
    engine = TorchBackend(ModelRef(str(model_dir), None))
    generation = fixed_length(args.max_new_tokens)
    limits = ImageLimits(89_478_485, 4, 16_384)
    files = line_files(PRINT_LINES, max(args.batches))
    pixels = np.stack([engine.prepare(decode_line(p.read_bytes(), limits).line) for p in files])
    rows = []
    with torch.inference_mode():
        for size in args.batches:
            batch = pixels[:size]
            inputs = engine.to_device(batch)
            encoder_s = timed(lambda: engine.model.encoder(pixel_values=inputs), engine.device, args.repeats)  # noqa: B023 - called at once, inside the loop
            generate_s = timed(lambda: engine.model.generate(pixel_values=inputs, **generation), engine.device, args.repeats)  # noqa: B023 - called at once, inside the loop
            engine_s = timed(lambda: engine.read(batch, GenerationOptions.from_overrides(generation)), engine.device, args.repeats)  # noqa: B023 - called at once, inside the loop
            rows.append(
                {
                    "batch": size,
                    "encoder_s": round(encoder_s, 4),
                    "decoder_s": round(generate_s - encoder_s, 4),
                    "generate_s": round(generate_s, 4),
                    "engine_s": round(engine_s, 4),
                    "engine_overhead_share": round((engine_s - generate_s) / engine_s, 4),
                    "encoder_lines_per_s": round(size / encoder_s, 1),
                    "generate_lines_per_s": round(size / generate_s, 1),
                    "engine_lines_per_s": round(size / engine_s, 1),
                }
            )
            print(rows[-1], file=sys.stderr)
    figures = {"device": engine.describe(), "model": str(args.model or f"standin-{args.standin}"), "tokens": args.max_new_tokens}
    if engine.device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name()
    figures |= {"rows": rows, "versions": versions(), "date": time.strftime("%Y-%m-%d")}
    if args.trace:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
        batch = pixels[: max(args.batches)]
        with profile(activities=activities) as prof:
            engine.read(batch, GenerationOptions.from_overrides(generation))
            synchronize(engine.device)
        key = "cuda_time_total" if engine.device.type == "cuda" else "cpu_time_total"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".ops.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=30))
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
