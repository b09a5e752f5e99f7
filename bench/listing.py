"""Listing into the catalog: how fast `pisar submit` turns N objects in SeaweedFS into a campaign, and its peak memory.

    python bench/listing.py                   # 1 M tiny objects (the upload takes a few minutes)
    python bench/listing.py --keys 100000

A throwaway SeaweedFS gets N one-byte objects named like page-folder line images
(``fond/NNNN/page_NNN/line_NNNNNN.png``; they are never read, only listed), then a real
``pisar submit`` lists them into a fresh Postgres database and publishes the shards to a
throwaway Redis. The submit runs as a child process, so ``peak_rss_mb`` is the producer's own
peak. ``list_seconds`` excludes the process start and model load, taken from a submit of a
one-object prefix in the same run (``start_seconds``, ``start_rss_mb``).
The submit runs once per ``--clients`` entry (``PISAR_S3_CLIENT``: obstore, then boto3, by
default), the first one's figures unprefixed, the others' as ``keys_per_s_boto3`` and
``vs_boto3`` (its list time over the first's). ``redis_bytes_per_queued_shard`` is the growth of that Redis's ``used_memory`` over the shards
published; with back-pressure the submit publishes at most ``--high-water`` of them (the rest
wait in the catalog for `pisar feed`), so ``redis_queue_mb`` is the queue at its high-water mark.
Issue 8 targets: 20,000 keys/s and < 300 MB at 1 M keys.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_paths import DEMO_MODEL, REPO  # bench/ is on sys.path when a script here runs
from redis_memory import clear, used_memory, waiting  # bench/ is on sys.path when a script here runs
from worker_path import report

PISAR = str(Path(sys.executable).with_name("pisar"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--upload-threads", type=int, default=32)
    parser.add_argument("--high-water", type=int, default=1000, help="PISAR_QUEUE_HIGH_WATER of the submit")
    parser.add_argument("--list-threads", type=int, default=8, help="PISAR_LIST_THREADS of the submit")
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=["obstore", "boto3"],
        default=["obstore", "boto3"],
        help="PISAR_S3_CLIENT of each submit, side by side",
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-listing.json")
    return parser.parse_args(argv)


def key(number: int) -> str:
    return f"lines/fond/{number // 100_000:04d}/page_{number // 40 % 2500:04d}/line_{number:07d}.png"


def upload(client, bucket: str, count: int, threads: int) -> float:  # boto3 client
    """Put ``count`` one-byte objects; returns seconds."""
    started = time.perf_counter()

    def put(start: int) -> None:
        for number in range(start, min(count, start + 1000)):
            client.put_object(Bucket=bucket, Key=key(number), Body=b"x")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(0, count, 1000)))
    return time.perf_counter() - started


def submit(env: dict[str, str], source: str, name: str, shard_size: int, log: Path) -> tuple[float, float, str, float]:
    """Run `pisar submit` as a child; its seconds, its own peak RSS in MB, the first line it printed, its CPU seconds."""
    started = time.perf_counter()
    with log.open("w") as handle:
        child = subprocess.Popen(
            [PISAR, "submit", source, "--model", str(DEMO_MODEL), "--name", name, "--shard-size", str(shard_size)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )
        _pid, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the maximum over all children
    seconds = time.perf_counter() - started
    said = log.read_text().strip()
    if status != 0:
        raise SystemExit(f"bench: submit failed: {said[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, said.splitlines()[0], usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    sys.path.insert(0, str(REPO))
    from infra.local_services import ensure_postgres, start_redis, start_seaweedfs, throwaway_database, unconfigured_env

    weed = start_seaweedfs(Path(tempfile.mkdtemp(prefix="pisar-bench-weed-")))
    env = unconfigured_env()
    env.update(weed.env)
    redis = start_redis(Path(tempfile.mkdtemp(prefix="pisar-bench-redis-")), aof=False)  # its own: memory is the queue's alone
    env.update(
        {
            "PISAR_REDIS_URL": redis.url,
            "PISAR_QUEUE": "bench-listing",
            "PISAR_QUEUE_HIGH_WATER": str(args.high_water),
            "PISAR_QUEUE_LOW_WATER": str(args.high_water // 2),
            "PISAR_LIST_THREADS": str(args.list_threads),
        }
    )
    try:
        with throwaway_database(ensure_postgres(), "pisar_bench") as database_url:
            env["PISAR_DATABASE_URL"] = database_url
            client = weed.s3_client()
            client.create_bucket(Bucket="listing")
            client.put_object(Bucket="listing", Key="warm/line_0000000.png", Body=b"x")
            upload_s = upload(client, "listing", args.keys, args.upload_threads)
            logs = Path(tempfile.mkdtemp(prefix="pisar-bench-listing-"))
            starts = [submit(env, "s3://listing/warm", f"warm-{n}", args.shard_size, logs / f"warm-{n}.log") for n in range(2)]
            start_s, start_rss_mb, _, start_cpu_s = min(starts)  # start, model, one key; the first pays for cold file caches
            clear(redis.url, "bench-listing")  # the warm-up's shard: the window is the measured campaign's alone
            memory_before = used_memory(redis.url)
            weed_cpu_before = cpu_seconds(weed.proc.pid)
            env["PISAR_S3_CLIENT"] = args.clients[0]
            submit_s, peak_rss_mb, said, submit_cpu_s = submit(env, "s3://listing/lines", "listing", args.shard_size, logs / "listing.log")
            weed_cpu_s = cpu_seconds(weed.proc.pid) - weed_cpu_before
            raw_s = raw_listing_seconds(client, "listing", "lines/", args.keys)
            queued_bytes = used_memory(redis.url) - memory_before
            queued = waiting(redis.url, "bench-listing")
            others = {}
            for other in args.clients[1:]:  # the same keys, the other client, into a campaign of its own
                clear(redis.url, "bench-listing")
                env["PISAR_S3_CLIENT"] = other
                seconds, _, _, cpu = submit(env, "s3://listing/lines", f"listing-{other}", args.shard_size, logs / f"{other}.log")
                others[other] = (seconds - start_s, cpu - start_cpu_s)
    finally:
        weed.stop()
        redis.stop()
    shards = int(re.search(r"lines in (\d+) shards", said).group(1))  # ranges end in short shards: not keys / shard size
    list_s = submit_s - start_s
    figures = {
        "keys": args.keys,
        "keys_per_s": round(args.keys / list_s, 1) if list_s > 0.5 else None,  # too few keys to tell from the start-up
        "keys_per_s_whole_submit": round(args.keys / submit_s, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "start_rss_mb": round(start_rss_mb, 1),  # the same submit of one key: imports and model, the floor
        "submit_seconds": round(submit_s, 2),
        "start_seconds": round(start_s, 2),
        "list_seconds": round(list_s, 2),
        # The same keys in one boto3 paginator, nothing written: what the S3 server itself sustains here.
        "raw_paginator_keys_per_s": round(args.keys / raw_s, 1),
        "vs_raw_paginator": round(raw_s / list_s, 2) if list_s > 0.5 else None,
        "client": args.clients[0],
        **{f"keys_per_s_{name}": round(args.keys / seconds, 1) if seconds > 0.5 else None for name, (seconds, _) in others.items()},
        **{f"vs_{name}": round(seconds / list_s, 2) if list_s > 0.5 else None for name, (seconds, _) in others.items()},
        **{f"list_cpu_seconds_{name}": round(cpu, 1) for name, (_, cpu) in others.items()},
        "list_cpu_seconds": round(submit_cpu_s - start_cpu_s, 1),
        "weed_cpu_seconds_during_submit": round(weed_cpu_s, 1),  # of 2 cores x submit_seconds on this machine
        "submit_cpu_seconds": round(submit_cpu_s, 1),  # the producer's own: Python parsing listings, cutting shards, COPY
        "start_cpu_seconds": round(start_cpu_s, 1),
        "upload_seconds": round(upload_s, 2),
        "shard_size": args.shard_size,
        "shards": shards,
        "queued_shards": queued,  # in Redis after the submit: at most the high-water mark
        "high_water": args.high_water,
        "list_threads": args.list_threads,
        "redis_bytes_per_queued_shard": round(queued_bytes / queued) if queued else None,
        "redis_queue_mb": round(queued_bytes / 2**20, 2),
        "submit_said": said,
        "date": time.strftime("%Y-%m-%d"),
    }
    report(figures, args.out)
    return 0


def raw_listing_seconds(client, bucket: str, prefix: str, expected: int) -> float:  # boto3 client
    """Seconds for one plain ListObjectsV2 paginator over ``prefix``."""
    started = time.perf_counter()
    count = sum(len(page.get("Contents", [])) for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
    if count != expected:
        raise SystemExit(f"bench: the raw listing found {count} keys, not {expected}")
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
