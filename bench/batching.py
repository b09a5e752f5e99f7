"""Width-grouped batches against key order, on a real model whose lines end at their own length.

    python bench/batching.py                         # the demo model on ../shared/data/print-lines
    python bench/batching.py --model DIR --source FOLDER --batch-size 64

``bench/engine.py`` forces every line to the same token count, so it cannot show what grouping
buys. Here each line stops at its end token, and a batch runs until its longest line ends. Both
ways read the same lines through the worker's path (``read_lines`` in worker/batches.py), alternating over
``--rounds``; the JSON gives lines/s, the speed-up, and the share of decoder row-steps spent on
lines that had already ended (``LineReader.steps``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_paths import DEMO_MODEL, PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import PisarRow, report  # bench/ is on sys.path when a script here runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--source", type=Path, default=PRINT_LINES, help="folder of line images")
    parser.add_argument("--lines", type=int, default=0, help="the first N lines (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--groups", type=int, default=8, help="batches regrouped by width (the worker's PISAR_LENGTH_GROUPS)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-batching.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from pisar.storage import LocalStorage, is_image_key

    storage = LocalStorage(args.source)
    keys = sorted(k for k in storage.iter_keys() if is_image_key(k))[: args.lines or None]
    if not keys:
        raise SystemExit(f"bench: no line images in {args.source}")
    greedy = {"num_beams": 1, "do_sample": False}
    rows = {
        name: PisarRow(args.model, storage, "auto", args.batch_size, args.device, 16, greedy, length_groups=groups)
        for name, groups in (("key_order", 1), ("width_groups", args.groups))
    }
    rows["key_order"].engine = rows["width_groups"].engine  # one model in memory; both rows drive it
    engine = rows["key_order"].engine
    for row in rows.values():
        row.run(keys[: args.batch_size])  # warm-up
    seconds = dict.fromkeys(rows, 0.0)
    steps = {name: [0, 0] for name in rows}
    for number in range(args.rounds):
        order = list(rows) if number % 2 == 0 else list(reversed(rows))
        for name in order:
            paid, useful = engine.steps.paid, engine.steps.useful
            seconds[name] += rows[name].run(keys)
            steps[name][0] += engine.steps.paid - paid
            steps[name][1] += engine.steps.useful - useful
    same = rows["key_order"].texts == rows["width_groups"].texts
    for row in rows.values():
        row.close()
    rate = {name: len(keys) * args.rounds / seconds[name] for name in rows}
    figures = {
        "model": str(args.model),
        "engine": engine.describe(),
        "lines": len(keys),
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "groups": args.groups,
        "key_order_lines_per_s": round(rate["key_order"], 2),
        "width_groups_lines_per_s": round(rate["width_groups"], 2),
        "speedup": round(rate["width_groups"] / rate["key_order"], 3),
        "key_order_wasted_step_share": round(1 - steps["key_order"][1] / steps["key_order"][0], 4),
        "width_groups_wasted_step_share": round(1 - steps["width_groups"][1] / steps["width_groups"][0], 4),
        "same_texts": same,
        "date": time.strftime("%Y-%m-%d"),
    }
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
