"""Line detection against reading, per page, in one run: how many CPU cores detection needs per GPU.

    python bench/detect.py                      # the Transkribus page + 2 pages of pasted print lines, demo model, CPU
    python bench/detect.py --pasted 4 --device cuda --model DIR   # on a GPU node (bench/gpu.sh runs it)

Each page is detected by the configured detector (blla by default) through ``pisar.detect``, timed
in wall and CPU seconds (this process's threads and its polygon pool's processes), with blla's
split between the network and the post-processing (vectorising, polygons, reading order), once per
polygon pool size (``--polygon-workers 1 0``: one process, then one per core), side by side. The detected layouts are then
written as PAGE files beside their scans and read by the worker's own path (``PisarRow``, as
bench/pages.py), timed the same way. The JSON gives both per page, their ratio, and the sizing
rule: detect cores per GPU = (GPU lines/s / lines per page) x detect CPU-s per page. Quality is
reported where the truth is known: the Transkribus page's own PAGE file (matched at polygon
IoU >= 0.5, reading order as Kendall's tau) and the rectangles the lines were pasted at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import DEMO_MODEL, PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import PisarRow, report  # bench/ is on sys.path when a script here runs

TRANSKRIBUS = REPO / "tests" / "data" / "pages" / "170025120000003,0074"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="the reading model")
    parser.add_argument("--detector", default="blla")
    parser.add_argument("--pasted", type=int, default=2, help="pages of pasted print lines besides the Transkribus page")
    parser.add_argument("--lines-per-page", type=int, default=16)
    parser.add_argument("--source", type=Path, default=PRINT_LINES, help="folder of real line PNGs to paste")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--polygon-workers", type=int, nargs="+", default=[1, 0], help="pool sizes to compare (0: one per core)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--no-warm", action="store_true", help="skip the untimed first page (a quick check; the first page then pays the pool's start)"
    )
    parser.add_argument("--gpu-lines-per-s", type=float, default=500.0, help="a GPU's reading rate, for the sizing rule")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-detect.json")
    return parser.parse_args(argv)


def pages(source: Path, count: int, per_page: int) -> list[tuple[str, bytes, list | None]]:
    """(name, scan bytes, truth polygons or None): the Transkribus page, then pages of pasted real lines."""
    import io

    from PIL import Image

    sys.path.insert(0, str(REPO))
    from pisar.layout import read_layout
    from tests.helpers.pages import pasted_page, rectangle

    truth = read_layout(TRANSKRIBUS.with_suffix(".xml").read_bytes())
    made = [("transkribus.jpg", TRANSKRIBUS.with_suffix(".jpg").read_bytes(), [line.polygon for line in truth.lines])]
    paths = [p for p in sorted(source.glob("*.png")) if Image.open(p).width < 2300]
    for page in range(count):
        chosen = paths[page * per_page : (page + 1) * per_page]
        if len(chosen) < per_page:
            raise SystemExit(f"bench: {source} holds too few lines for {count} pages of {per_page}")
        canvas, placed = pasted_page(chosen, seed=page)
        scan = io.BytesIO()
        canvas.save(scan, format="PNG")
        made.append((f"pasted{page:02d}.png", scan.getvalue(), [rectangle(x, y, *Image.open(p).size) for p, (x, y) in placed]))
    return made


def cpu_seconds() -> float:
    """CPU time of this process and of its live children (the polygon pool's workers), from /proc."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import io

    from PIL import Image

    from pisar.detect import load_detector
    from pisar.detect.matching import match_lines
    from pisar.detect.page_xml import page_xml
    from pisar.layout import line_key
    from pisar.reader.devices import pick_device, pick_dtype
    from pisar.storage import LocalStorage

    device = pick_device(args.device)
    dtype = str(pick_dtype("auto", device)).removeprefix("torch.")
    workdir = Path(tempfile.mkdtemp(prefix="pisar-bench-detect-"))
    made = pages(args.source, args.pasted, args.lines_per_page)
    runs: dict[int, dict[str, list[float]]] = {}
    load_s, quality, keys = 0.0, {}, []
    for workers in args.polygon_workers:  # each pool size in turn, on the same pages
        loading = time.perf_counter()
        detector = load_detector(args.detector, device=str(device), polygon_workers=workers)
        load_s = max(load_s, time.perf_counter() - loading)
        timed: dict[str, list[float]] = {"wall": [], "cpu": [], "network": [], "post": [], "polygons": []}
        try:
            if not args.no_warm:  # warm: the pool starts, the network's first pass
                detector.detect(Image.open(io.BytesIO(made[-1][1])).convert("RGB"))
            for name, data, truth in made:
                image = Image.open(io.BytesIO(data)).convert("RGB")
                wall, cpu = time.perf_counter(), cpu_seconds()
                found = detector.detect(image)
                timed["wall"].append(time.perf_counter() - wall)
                timed["cpu"].append(cpu_seconds() - cpu)
                timings = getattr(detector, "timings", {})
                timed["network"].append(timings.get("network_s", 0.0))
                timed["post"].append(timings.get("postprocess_s", 0.0))
                timed["polygons"].append(timings.get("polygons_s", 0.0))
                if name in quality:
                    continue
                (workdir / name).write_bytes(data)
                (workdir / f"{name}.xml").write_bytes(page_xml(found, name))
                keys += [line_key(f"{name}.xml", line.line_id) for line in found.lines]
                matching = match_lines(truth, [line.polygon for line in found.lines])
                quality[name] = {
                    "truth": matching.truths,
                    "detected": matching.detected,
                    "matched": matching.matched,
                    "order_tau": round(matching.order_tau, 3),
                }
        finally:
            detector.close()
        runs[workers] = timed
    row = PisarRow(
        args.model,
        LocalStorage(workdir),
        dtype,
        args.batch_size,
        args.device,
        fetch_threads=8,
        generation={"num_beams": 1, "do_sample": False},
    )
    try:
        row.run(keys[: args.batch_size], layout="xml")  # warm-up: the model's first batch
        wall, cpu = time.perf_counter(), time.process_time()
        row.run(keys, layout="xml", crop="box")  # the detect campaigns' default cut (pisar/sources/detected_pages.py)
        read_wall, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        row.close()
    count = len(made)
    lines_per_page = len(keys) / count
    serial = runs[args.polygon_workers[0]]
    detect_cpu_page = statistics.median(serial["cpu"])  # the sizing rule's cost: CPU-seconds, whatever the pool
    read_cpu_page = read_cpu / count
    pages_per_gpu_s = args.gpu_lines_per_s / max(lines_per_page, 1.0)
    pools = {
        str(workers): {
            "wall_s_per_page": round(statistics.median(timed["wall"]), 2),
            "cpu_s_per_page": round(statistics.median(timed["cpu"]), 2),
            "network_s": round(statistics.median(timed["network"]), 2),
            "postprocess_s": round(statistics.median(timed["post"]), 2),
            "polygons_s": round(statistics.median(timed["polygons"]), 2),
        }
        for workers, timed in runs.items()
    }
    figures = {
        "detector": args.detector,
        "device": str(device),
        "cores": os.cpu_count(),
        "model": str(args.model),
        "pages": count,
        "lines": len(keys),
        "lines_per_page": round(lines_per_page, 1),
        "detector_load_s": round(load_s, 2),
        "detect_wall_s_per_page": round(statistics.median(serial["wall"]), 2),
        "detect_cpu_s_per_page": round(detect_cpu_page, 2),
        "detect_pages_per_s": round(1 / statistics.median(serial["wall"]), 4),
        "detect_network_s_per_page": round(statistics.median(serial["network"]), 2),
        "detect_postprocess_s_per_page": round(statistics.median(serial["post"]), 2),
        "detect_polygons_s_per_page": round(statistics.median(serial["polygons"]), 2),
        "polygon_pools": pools,  # pool size (0: one per core) -> per-page medians, side by side on the same pages
        "read_wall_s_per_page": round(read_wall / count, 2),
        "read_cpu_s_per_page": round(read_cpu_page, 2),
        "detect_to_read_cpu_ratio": round(detect_cpu_page / read_cpu_page, 2) if read_cpu_page else None,
        "gpu_lines_per_s_assumed": args.gpu_lines_per_s,
        "detect_cores_per_gpu": round(pages_per_gpu_s * detect_cpu_page, 1),
        "quality": quality,
        "date": time.strftime("%Y-%m-%d"),
    }
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
