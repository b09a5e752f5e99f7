"""S3 reads and listings: the client CPU per object through boto3 and through obstore, side by side.

    python bench/storage.py                          # 1,000 real line PNGs, 8 threads, 3 rounds
    python bench/storage.py --lines 200 --rounds 1   # the smoke test's size

A throwaway SeaweedFS gets the first ``--lines`` PNGs of ``../shared/data/print-lines`` (or
``--images``), under as many keys again as needed. Each round, in this one process, every object
is read through ``S3Storage.read`` with ``PISAR_S3_CLIENT=boto3`` and with ``obstore`` (the order
alternates), by ``--threads`` threads as the worker's fetch pool does; ``cpu_us_per_read`` is this
process's CPU time (user + system, all threads) over the reads, which is what the reads take from
the GIL-holding process that also drives the decoder. Then the prefix is listed whole by a plain
boto3 paginator and by obstore. The JSON gives the medians over the rounds and their ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import report  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=Path, default=PRINT_LINES)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-storage.json")
    return parser.parse_args(argv)


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def timed_reads(storage, keys: list[str], threads: int) -> tuple[float, float]:  # an S3Storage
    """(CPU seconds, wall seconds) of reading every key once with ``threads`` threads."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(storage.read, keys[: threads * 2]))  # warm the connection pool
        cpu_start, wall_start = cpu(), time.perf_counter()
        sizes = list(pool.map(lambda k: len(storage.read(k)), keys))
        elapsed = time.perf_counter() - wall_start, cpu() - cpu_start
    assert all(sizes), "every object read whole"
    return elapsed[1], elapsed[0]


def timed_listing(list_all) -> tuple[float, float, int]:
    cpu_start, wall_start = cpu(), time.perf_counter()
    count = len(list_all())
    return cpu() - cpu_start, time.perf_counter() - wall_start, count


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from infra.local_services import start_seaweedfs
    from pisar import s3_fast
    from pisar.s3_storage import S3Storage
    from pisar.settings import Settings

    paths = sorted(args.images.glob("*.png"))
    if not paths:
        raise SystemExit(f"bench: no PNG lines in {args.images}")
    objects = {f"lines/{i:06d}.png": paths[i % len(paths)].read_bytes() for i in range(args.lines)}
    weed = start_seaweedfs(Path(tempfile.mkdtemp(prefix="bench-storage-")))
    try:
        os.environ.update(weed.env)
        client = weed.s3_client()
        client.create_bucket(Bucket="bench")
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda item: client.put_object(Bucket="bench", Key=item[0], Body=item[1]), objects.items()))
        keys = list(objects)
        base = {"s3_endpoint_url": weed.env["PISAR_S3_ENDPOINT_URL"], "fetch_threads": args.threads}
        stores = {name: S3Storage("bench", "lines/", Settings(**base, s3_client=name)) for name in ("boto3", "obstore")}
        reads: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
        listings: dict[str, list[tuple[float, float, int]]] = {"boto3_paginator": [], "obstore": []}
        for round_ in range(args.rounds):
            for name in sorted(stores, reverse=bool(round_ % 2)):  # alternate which client goes first
                reads[name].append(timed_reads(stores[name], keys, args.threads))
            listings["boto3_paginator"].append(
                timed_listing(
                    lambda: [
                        o["Key"]
                        for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="lines/")
                        for o in page.get("Contents", [])
                    ]
                )
            )
            listings["obstore"].append(
                timed_listing(lambda: [k for page in s3_fast.list_pages(stores["obstore"].store, "lines/") for k in page])
            )
    finally:
        weed.stop()

    figures: dict[str, object] = {"lines": args.lines, "threads": args.threads, "rounds": args.rounds, "cpu_count": os.cpu_count()}
    for name, runs in reads.items():
        figures[f"{name}_cpu_us_per_read"] = round(statistics.median(c for c, _ in runs) / args.lines * 1e6, 1)
        figures[f"{name}_reads_per_s"] = round(statistics.median(args.lines / w for _, w in runs), 1)
    figures["obstore_vs_boto3_cpu_per_read"] = round(figures["obstore_cpu_us_per_read"] / figures["boto3_cpu_us_per_read"], 3)
    for name, runs in listings.items():
        assert all(n == args.lines for _, _, n in runs), f"{name} listed every key"
        figures[f"list_{name}_keys_per_s"] = round(statistics.median(n / w for _, w, n in runs))
        figures[f"list_{name}_cpu_us_per_key"] = round(statistics.median(c / n for c, _, n in runs) * 1e6, 2)
    figures["list_obstore_vs_paginator"] = round(figures["list_obstore_keys_per_s"] / figures["list_boto3_paginator_keys_per_s"], 2)
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
