"""A page's lines through IIIF: one whole-page fetch cut locally, against one region request per line.

    python bench/iiif_fetch.py            # the Transkribus page and a page of pasted print lines, 3 runs
    python bench/iiif_fetch.py --runs 5 --format png

Both pages are served by the IIIF Image API reference server (``iiif``, the tests' server) on a
loopback port, each with its PAGE layout. Per page and mode, through Pisar's own client
(``pisar/iiif/client.py``): the requests and the bytes received (``info.json`` included, read once
per image as the worker does), per line; the wall seconds on this side (median of ``--runs``); and
the server's CPU seconds (its process's user + system time over the run), since a region request
makes the server decode its source image again. The lines themselves are decoded and cut as the
worker cuts them (``crop_line``, box), so both modes deliver the same pixels' worth of lines.

Quality: the demo model (``--model``) reads the pasted page's 24 held-out lines cut from the file itself,
from the page served as PNG (lossless) and as JPEG (``PISAR_IIIF_IMAGE_FORMAT``'s default: the
server re-encodes the page), against their ground truth: what asking for JPEG costs in CER.
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
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))

TRANSKRIBUS = "170025120000003,0074"


def _pages(folder: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """The served images (identifier -> file), their layouts, and the pasted page's true text by line id."""
    from PIL import Image

    from tests.helpers.pages import page_xml, pasted_page, rectangle

    kraken = REPO / "tests" / "data" / "pages"
    (folder / "kraken.jpg").write_bytes((kraken / f"{TRANSKRIBUS}.jpg").read_bytes())
    from pisar.train.data import is_held_out

    # lines the demo model never trained on (its held-out split, models/demo/README.md): it reads the others perfectly
    paths = [p for p in sorted(PRINT_LINES.glob("*.png")) if is_held_out(p.name, 0.11) and Image.open(p).width < 2300][:24]
    canvas, placed = pasted_page(paths, seed=11)
    canvas.save(folder / "pasted.png")
    lines = [(f"l{n:02d}", rectangle(left, top, *Image.open(path).size)) for n, (path, (left, top)) in enumerate(placed)]
    truth = {
        f"l{n:02d}": path.with_name(path.name.replace(".bin.png", ".gt.txt")).read_text(encoding="utf-8").strip()
        for n, (path, _) in enumerate(placed)
    }
    return {"kraken": (kraken / f"{TRANSKRIBUS}.xml").read_bytes(), "pasted": page_xml("pasted.png", canvas.size, lines)}, truth


def _quality(client, service: str, layout, truth: dict[str, str], scan_file: Path, model: Path) -> dict[str, object]:
    """The demo model's CER on the pasted page's lines, cut from the file itself and from the page
    served as PNG (lossless) and as JPEG (the default: the server re-encodes the page)."""
    import jiwer
    from PIL import Image

    from pisar import model_ref
    from pisar.iiif.image_api import image_url, read_info
    from pisar.page_crop import crop_line
    from pisar.reader import LineReader

    reader = LineReader(model_ref.resolve(model_ref.parse(str(model))), device="cpu", dtype="float32")
    info = read_info(client.get(f"{service}/info.json", 1 << 20, "info"), service, 3)
    scans = {"file": Image.open(scan_file)}
    for image_format in ("png", "jpg"):
        scans[f"iiif_{image_format}"] = Image.open(io.BytesIO(client.get(image_url(info, image_format=image_format)[0], 1 << 28, "image")))
    import numpy as np

    texts: dict[str, list[str]] = {}
    for mode, scan in scans.items():
        pixels = np.stack([reader.prepare(crop_line(scan, line, "box")) for line in layout.lines])
        texts[mode] = [outcome.text for outcome in reader.read(pixels).outcomes]
    references = [truth[line.line_id] for line in layout.lines]
    return {
        "lines": len(references),
        "cer": {mode: round(float(jiwer.cer(references, hypotheses)), 4) for mode, hypotheses in texts.items()},
        "same_text_as_file": {
            mode: sum(a == b for a, b in zip(hypotheses, texts["file"], strict=True)) for mode, hypotheses in texts.items()
        },
    }


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds, from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fetch(client, service: str, layout, mode: str, image_format: str) -> int:
    """Fetch and cut every line of one page in ``mode``; the number of lines cut."""
    from PIL import Image

    from pisar.iiif.image_api import image_url, read_info
    from pisar.layout import fitted_to
    from pisar.page_crop import crop_line

    info = read_info(client.get(f"{service}/info.json", 1 << 20, "info"), service, 3)
    layout = fitted_to(layout, info.width, info.height)
    cut = 0
    if mode == "page":
        url, _ = image_url(info, image_format=image_format)
        scan = Image.open(io.BytesIO(client.get(url, 1 << 28, "image")))
        scan.load()
        for line in layout.lines:
            crop_line(scan, line, "box")
            cut += 1
        return cut
    for line in layout.lines:
        left, top, right, bottom = line.box
        url, _ = image_url(info, (left, top, right - left, bottom - top), image_format)
        region = Image.open(io.BytesIO(client.get(url, 1 << 26, "region")))
        region.load()
        cut += 1
    return cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", default="jpg", choices=("jpg", "png"))
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="reads the pasted page's lines for the quality figures")
    parser.add_argument("--no-quality", dest="quality", action="store_false", help="leave out the CER of file, PNG and JPEG pages")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-iiif-fetch.json")
    args = parser.parse_args()

    from pisar.iiif.addresses import AddressPolicy, parse_networks
    from pisar.iiif.client import IiifClient
    from pisar.layout import read_layout
    from tests.helpers.iiif import ARCHIVE_NETWORK, start_image_server

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pages, truth = _pages(folder)
        layouts = {name: read_layout(data, name) for name, data in pages.items()}
        server = start_image_server(folder)
        try:
            figures: dict[str, object] = {"format": args.format, "runs": args.runs, "pages": {}}
            for name, layout in layouts.items():
                service = f"{server.url}/3.0_pil/{name}"
                per_mode: dict[str, dict[str, float]] = {}
                for mode in ("page", "region"):
                    walls, server_cpu = [], []
                    for _ in range(args.runs):
                        client = IiifClient(AddressPolicy(parse_networks([ARCHIVE_NETWORK])))
                        cpu_before, started = _cpu_seconds(server.proc.pid), time.perf_counter()
                        lines = _fetch(client, service, layout, mode, args.format)
                        walls.append(time.perf_counter() - started)
                        server_cpu.append(_cpu_seconds(server.proc.pid) - cpu_before)
                        requests, received = sum(client.traffic.requests.values()), sum(client.traffic.received.values())
                        client.close()
                    per_mode[mode] = {
                        "lines": lines,
                        "requests": requests,
                        "bytes": received,
                        "requests_per_line": round(requests / lines, 3),
                        "bytes_per_line": round(received / lines),
                        "wall_seconds_median": round(statistics.median(walls), 3),
                        "server_cpu_seconds_median": round(statistics.median(server_cpu), 3),
                    }
                page, region = per_mode["page"], per_mode["region"]
                figures["pages"][name] = {  # type: ignore[index]
                    **per_mode,
                    "region_over_page": {
                        "requests": round(region["requests"] / page["requests"], 2),
                        "bytes": round(region["bytes"] / page["bytes"], 3),
                        "wall_seconds": round(region["wall_seconds_median"] / page["wall_seconds_median"], 2),
                        "server_cpu_seconds": round(region["server_cpu_seconds_median"] / max(page["server_cpu_seconds_median"], 1e-3), 2),
                    },
                }
            if args.quality:
                client = IiifClient(AddressPolicy(parse_networks([ARCHIVE_NETWORK])))
                figures["quality"] = _quality(
                    client, f"{server.url}/3.0_pil/pasted", layouts["pasted"], truth, folder / "pasted.png", args.model
                )
        finally:
            server.stop()
    report(figures, args.out)


if __name__ == "__main__":
    main()
