"""Page mode against line mode: the same real lines read as line images and as TextLines cut from page scans, in one run.

    python bench/pages.py                          # demo model, 8 pages of 24 pasted print lines, folder source, 3 rounds
    python bench/pages.py --from-s3 --crop polygon # from a throwaway SeaweedFS, polygon crops
    python bench/pages.py --model DIR --device cuda --pages 32

Real print lines (``../shared/data/print-lines`` by default) are pasted onto white page canvases
(``tests/helpers/pages.py``, as the page tests do) with a PAGE 2019 file per page whose rectangles are the
pasted lines; the same lines are also written as line PNGs. One engine then reads both through the
worker's own path (``read_lines`` in worker/batches.py; page mode through ``pisar/sources/page_lines.py``, which
reads each XML and scan once per shard, a shard being one round's pages), alternating which goes
first each round. The JSON has each mode's lines/s (median over rounds), their ratio, the input
wait of each, and the share of lines whose text is identical in both (a box crop of a pasted line
is the line image, so 1.0 with ``--crop box``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import DEMO_MODEL, PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import PisarRow, report, seaweed_bucket  # bench/ is on sys.path when a script here runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--source", type=Path, default=PRINT_LINES, help="folder of real line PNGs")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--lines-per-page", type=int, default=24)
    parser.add_argument("--crop", choices=["polygon", "box"], default="box")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--from-s3", action="store_true", help="both modes read from a throwaway SeaweedFS")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-pages.json")
    return parser.parse_args(argv)


def build(source: Path, pages: int, per_page: int) -> dict[str, bytes]:
    """Objects of both layouts: ``lines/NAME.png`` and ``pages/pNN.png`` + ``pages/pNN.xml`` holding the same lines."""
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from tests.helpers.pages import page_xml, pasted_page, rectangle

    paths = [p for p in sorted(source.glob("*.png")) if Image.open(p).width < 2300][: pages * per_page]
    if len(paths) < pages * per_page:
        raise SystemExit(f"bench: {source} holds {len(paths)} usable lines, fewer than {pages} x {per_page}")
    objects: dict[str, bytes] = {}
    for page in range(pages):
        chosen = paths[page * per_page : (page + 1) * per_page]
        canvas, placed = pasted_page(chosen, seed=page)
        scan = io.BytesIO()
        canvas.save(scan, format="PNG")
        objects[f"pages/p{page:03d}.png"] = scan.getvalue()
        lines = []
        for number, (path, (left, top)) in enumerate(placed):
            line_id = f"p{page:03d}l{number:03d}"
            lines.append((line_id, rectangle(left, top, *Image.open(path).size)))
            objects[f"lines/{line_id}.png"] = path.read_bytes()
        objects[f"pages/p{page:03d}.xml"] = page_xml(f"p{page:03d}.png", canvas.size, lines)
    return objects


def open_storage(objects: dict[str, bytes], from_s3: bool, workdir: Path):  # -> (Storage, a server to stop or None)
    from pisar.storage import LocalStorage

    if from_s3:
        return seaweed_bucket(objects, workdir)
    for key, data in objects.items():
        (workdir / key).parent.mkdir(parents=True, exist_ok=True)
        (workdir / key).write_bytes(data)
    return LocalStorage(workdir), None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from pisar.layout import line_key
    from pisar.reader.devices import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = str(pick_dtype("auto", device)).removeprefix("torch.")
    objects = build(args.source, args.pages, args.lines_per_page)
    line_keys = sorted(k for k in objects if k.startswith("lines/"))
    page_keys = [line_key(f"pages/{k[6:10]}.xml", k[6:-4]) for k in line_keys]  # lines/p000l003.png -> pages/p000.xml#p000l003
    storage, weed = open_storage(objects, args.from_s3, Path(tempfile.mkdtemp(prefix="pisar-bench-pages-")))
    generation = {"num_beams": 1, "do_sample": False}
    row = PisarRow(args.model, storage, dtype, args.batch_size, args.device, fetch_threads=16, generation=generation)
    try:
        row.run(line_keys[: args.batch_size])  # warm-up: the model's first batch
        seconds: dict[str, list[float]] = {"lines": [], "pages": []}
        waits: dict[str, float] = {"lines": 0.0, "pages": 0.0}
        texts: dict[str, dict[str, str | None]] = {}
        for round_ in range(args.rounds):
            order = ["lines", "pages"] if round_ % 2 == 0 else ["pages", "lines"]
            for mode in order:
                row.texts, row.load_s = {}, 0.0
                started = time.perf_counter()
                if mode == "lines":
                    row.run(line_keys)
                else:
                    row.run(page_keys, layout="xml", crop=args.crop)
                seconds[mode].append(time.perf_counter() - started)
                waits[mode] += row.load_s
                texts[mode] = dict(row.texts)
    finally:
        row.close()
        if weed is not None:
            weed.stop()
    lines = len(line_keys)
    rates = {mode: lines / statistics.median(runs) for mode, runs in seconds.items()}
    same = sum(texts["lines"][k] == texts["pages"][p] for k, p in zip(line_keys, page_keys, strict=True))
    figures = {
        "model": str(args.model),
        "device": str(device),
        "source": "seaweedfs" if args.from_s3 else "folder",
        "pages": args.pages,
        "lines": lines,
        "crop": args.crop,
        "rounds": args.rounds,
        "line_mode_lines_per_s": round(rates["lines"], 1),
        "page_mode_lines_per_s": round(rates["pages"], 1),
        "page_vs_line": round(rates["pages"] / rates["lines"], 3),
        "line_mode_input_wait_s": round(waits["lines"] / args.rounds, 3),
        "page_mode_input_wait_s": round(waits["pages"] / args.rounds, 3),
        "identical_text_share": round(same / lines, 4),
        "date": time.strftime("%Y-%m-%d"),
    }
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
