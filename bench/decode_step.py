"""Host time per decoder step: generate(), Pisar's greedy loop, and its fixed-shape steps (CUDA graphs), on the same encoder states.

    python bench/decode_step.py                      # the small stand-in, batch 64, 40 steps, 5 repeats
    python bench/decode_step.py --standin large --batch 16

The stand-in is a random model of the reference shape (``pisar.random_model`` ``bench-small`` or
``bench-large``: DINOv2 encoder, TrOCR decoder, a RoBERTa-sized vocabulary, 40 forced steps), built
here. The encoder runs once; then each repeat decodes the same encoder states with generate() (as
the engine calls it: greedy, logits kept for the confidence), with ``GreedyLoop`` (pisar/reader/greedy.py;
on a CPU it takes the vocabulary in cache-sized chunks, pisar/reader/vocab_chunks.py), with the same loop
over each step's full logits (``loop_full_logits``), and with its fixed-shape steps (pisar/reader/decode_steps.py: one CUDA graph replay per step on CUDA,
the same steps uncaptured elsewhere, where they only add the padding rows' work), in rotating order. On a CPU a step's wall time is the host's dispatch work, which on a GPU is
launch cost (and the loop's dropped rows are work not done on either). The JSON has the medians
and their ratio, and whether both chose the same tokens.

With ``--input-threads N`` the loop is timed again while N threads decode and preprocess real line
PNGs without pause, as the worker's fetch pool does beside the decoder: ``input_slowdown`` is the
loop's step time with them over without. Run it with ``--threads 1 --input-threads 1`` on a 2-core
machine, so that the two do not share a core and what is left is the GIL's share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["small", "large"], default="small")
    parser.add_argument("--batch", type=int, nargs="+", default=[64], help="one or more batch sizes (the model is built once)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--input-threads", type=int, default=0, help="also time the loop beside this many decoding threads")
    parser.add_argument("--images", type=Path, default=PRINT_LINES)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-decode-step.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar import model_ref
    from pisar.random_model import build_random_model
    from pisar.reader import DecodeOptions
    from pisar.reader.torch_backend import TorchBackend

    torch.set_num_threads(args.threads)
    folder = build_random_model(Path(tempfile.mkdtemp(prefix="decode-step-")) / "standin", ["Въ лѣто"], preset=f"bench-{args.standin}")
    options = DecodeOptions(graphs="off")  # the plain loop; the fixed-shape one is built beside it in measure()
    engine = TorchBackend(model_ref.resolve(model_ref.parse(str(folder))), device=args.device, dtype="float32", options=options)
    if engine.greedy is None:
        raise SystemExit("bench: the stand-in's decoder is not one the greedy loop knows")
    runs = [measure(engine, batch, args) for batch in args.batch]
    printed: dict[str, object] = runs[0] if len(runs) == 1 else {"runs": runs}
    report(printed, args.out)
    return 0


def measure(engine, batch: int, args: argparse.Namespace) -> dict[str, object]:
    """generate() against the loop at one batch size, and optionally beside the input threads."""
    import torch

    from pisar.reader.greedy import GreedyLoop

    generation = {"num_beams": 1, "do_sample": False}
    graphed = GreedyLoop(engine.model, static=True)
    whole = GreedyLoop(engine.model, chunked=False)  # the plain loop with the step's full logits
    config = engine.greedy.settings(generation)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((batch, 3, 182, 1022), generator=generator).to(engine.device)

    def sync() -> None:
        if engine.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        encoded = engine.model.encoder(pixel_values=pixels)
        states = encoded.last_hidden_state

        def run_generate() -> torch.Tensor:
            out = engine.model.generate(encoder_outputs=encoded, return_dict_in_generate=True, output_logits=True, **generation)
            return out.sequences[:, 1:]

        def run_loop() -> torch.Tensor:
            return engine.greedy._decode(states, config).tokens

        def run_graphed() -> torch.Tensor:
            return graphed._decode(states, config).tokens

        def run_whole() -> torch.Tensor:
            return whole._decode(states, config).tokens

        order = [("generate", run_generate), ("loop", run_loop), ("loop_full_logits", run_whole), ("graphed", run_graphed)]
        timings: dict[str, list[float]] = {name: [] for name, _ in order}
        steps: dict[str, int] = {}
        chosen: dict[str, torch.Tensor] = {}
        for name, run in order:  # warm-up (and, on CUDA, each bucket's graph captured)
            chosen[name] = run()
        for repeat in range(args.repeats):
            for name, run in order[repeat % len(order) :] + order[: repeat % len(order)]:
                sync()
                started = time.perf_counter()
                tokens = run()
                sync()
                timings[name].append(time.perf_counter() - started)
                steps[name] = tokens.shape[1]
    figures: dict[str, object] = {
        "standin": args.standin,
        "batch": batch,
        "device": str(engine.device),
        "threads": args.threads,
        "repeats": args.repeats,
        "steps": steps["generate"],
        "cpu_count": os.cpu_count(),
    }
    for name, runs in timings.items():
        figures[f"{name}_us_per_step"] = round(statistics.median(runs) / steps[name] * 1e6, 1)
    figures["loop_vs_generate_per_step"] = round(figures["loop_us_per_step"] / figures["generate_us_per_step"], 3)
    figures["full_logits_vs_generate_per_step"] = round(figures["loop_full_logits_us_per_step"] / figures["generate_us_per_step"], 3)
    figures["graphed_vs_loop_per_step"] = round(figures["graphed_us_per_step"] / figures["loop_us_per_step"], 3)
    figures["graphs_captured"] = engine.device.type == "cuda"  # elsewhere the fixed-shape steps run uncaptured
    if args.input_threads:
        figures.update(beside_input(engine, run_loop, sync, args))
    width = min(chosen["generate"].shape[1], chosen["loop"].shape[1])
    figures["same_tokens"] = bool(torch.equal(chosen["generate"][:, :width], chosen["loop"][:, :width]))
    for name in ("graphed", "loop_full_logits"):
        width = min(chosen[name].shape[1], chosen["loop"].shape[1])
        figures[f"{name}_same_tokens"] = bool(torch.equal(chosen[name][:, :width], chosen["loop"][:, :width]))
    return figures


def beside_input(engine, run_loop, sync, args: argparse.Namespace) -> dict[str, float]:
    """The loop timed idle and beside ``--input-threads`` threads that decode and preprocess PNGs without pause."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from pisar.images import ImageLimits, decode_line

    files = [p.read_bytes() for p in sorted(args.images.glob("*.png"))[:200]]
    if not files:
        raise SystemExit(f"bench: no PNG lines in {args.images}")
    limits = ImageLimits(89_478_485, 4, 16_384)
    stop, done = threading.Event(), []

    def prepare_forever() -> None:
        count = 0
        while not stop.is_set():
            engine.prepare(decode_line(files[count % len(files)], limits).line)
            count += 1
        done.append(count)

    def timed() -> float:
        sync()
        started = time.perf_counter()
        with torch.inference_mode():
            steps = run_loop().shape[1]
        sync()
        return (time.perf_counter() - started) / steps

    idle = [timed() for _ in range(args.repeats)]
    with ThreadPoolExecutor(args.input_threads) as pool:
        for _ in range(args.input_threads):
            pool.submit(prepare_forever)
        time.sleep(0.5)
        started = time.perf_counter()
        busy = [timed() for _ in range(args.repeats)]
        stop.set()
    elapsed = time.perf_counter() - started
    idle_us, busy_us = statistics.median(idle) * 1e6, statistics.median(busy) * 1e6
    return {
        "input_threads": args.input_threads,
        "loop_us_per_step_idle": round(idle_us, 1),
        "loop_us_per_step_beside_input": round(busy_us, 1),
        "input_slowdown": round(busy_us / idle_us, 3),
        "input_lines_per_s": round(sum(done) / elapsed, 1),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
