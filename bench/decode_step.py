"""Host time per decoder step: generate() against Pisar's greedy loop, on the same encoder states.

    python bench/decode_step.py                      # the small stand-in, batch 64, 40 steps, 5 repeats
    python bench/decode_step.py --standin large --batch 16

The stand-in is a random model of the reference shape (``pisar.random_model`` ``bench-small`` or
``bench-large``: DINOv2 encoder, TrOCR decoder, a RoBERTa-sized vocabulary, 40 forced steps), built
here. The encoder runs once; then each repeat decodes the same encoder states with generate() (as
the engine calls it: greedy, logits kept for the confidence) and with ``GreedyLoop`` (worker/greedy.py),
in alternating order. On a CPU a step's wall time is the host's dispatch work, which on a GPU is
launch cost (and the loop's dropped rows are work not done on either). The JSON has the medians
and their ratio, and whether both chose the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["small", "large"], default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-decode-step.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar import model_ref
    from pisar.random_model import build_random_model
    from pisar.worker.engine import Engine

    torch.set_num_threads(args.threads)
    folder = build_random_model(Path(tempfile.mkdtemp(prefix="decode-step-")) / "standin", ["Въ лѣто"], preset=f"bench-{args.standin}")
    engine = Engine(model_ref.resolve(model_ref.parse(str(folder))), device=args.device, dtype="float32")
    if engine.greedy is None:
        raise SystemExit("bench: the stand-in's decoder is not one the greedy loop knows")
    generation = {"num_beams": 1, "do_sample": False}
    config = engine.greedy.settings(generation)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((args.batch, 3, 182, 1022), generator=generator).to(engine.device)

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

        timings: dict[str, list[float]] = {"generate": [], "loop": []}
        steps: dict[str, int] = {}
        chosen: dict[str, torch.Tensor] = {}
        for name, run in (("generate", run_generate), ("loop", run_loop)):  # warm-up
            chosen[name] = run()
        for repeat in range(args.repeats):
            order = [("generate", run_generate), ("loop", run_loop)]
            for name, run in order if repeat % 2 == 0 else order[::-1]:
                sync()
                started = time.perf_counter()
                tokens = run()
                sync()
                timings[name].append(time.perf_counter() - started)
                steps[name] = tokens.shape[1]
    figures: dict[str, object] = {
        "standin": args.standin,
        "batch": args.batch,
        "device": str(engine.device),
        "threads": args.threads,
        "repeats": args.repeats,
        "steps": steps["generate"],
        "cpu_count": os.cpu_count(),
    }
    for name, runs in timings.items():
        figures[f"{name}_us_per_step"] = round(statistics.median(runs) / steps[name] * 1e6, 1)
    figures["loop_vs_generate_per_step"] = round(figures["loop_us_per_step"] / figures["generate_us_per_step"], 3)
    width = min(chosen["generate"].shape[1], chosen["loop"].shape[1])
    figures["same_tokens"] = bool(torch.equal(chosen["generate"][:, :width], chosen["loop"][:, :width]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
