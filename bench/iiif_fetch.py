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
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))

TRANSKRIBUS = "170025120000003,0074"


def _pages(folder: Path) -> dict[str, bytes]:
    """The served images (identifier -> file) and their layouts."""
    from PIL import Image

    from tests.helpers.pages import page_xml, pasted_page, rectangle

    kraken = REPO / "tests" / "data" / "pages"
    (folder / "kraken.jpg").write_bytes((kraken / f"{TRANSKRIBUS}.jpg").read_bytes())
    paths = [p for p in sorted(PRINT_LINES.glob("*.png")) if Image.open(p).width < 2300][:24]
    canvas, placed = pasted_page(paths, seed=11)
    canvas.save(folder / "pasted.png")
    lines = [(f"l{n:02d}", rectangle(left, top, *Image.open(path).size)) for n, (path, (left, top)) in enumerate(placed)]
    return {"kraken": (kraken / f"{TRANSKRIBUS}.xml").read_bytes(), "pasted": page_xml("pasted.png", canvas.size, lines)}


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
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-iiif-fetch.json")
    args = parser.parse_args()

    from pisar.iiif.addresses import AddressPolicy, parse_networks
    from pisar.iiif.client import IiifClient
    from pisar.layout import read_layout
    from tests.helpers.iiif import ARCHIVE_NETWORK, start_image_server

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        layouts = {name: read_layout(data, name) for name, data in _pages(folder).items()}
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
        finally:
            server.stop()
    report(figures, args.out)


if __name__ == "__main__":
    main()
