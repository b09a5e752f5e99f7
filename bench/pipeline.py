"""The whole distributed path: `pisar submit` and `pisar feed`, Redis, two Celery workers, SeaweedFS, Postgres.

    python bench/pipeline.py                  # 10,000 lines, about 10 min on 2 cores
    python bench/pipeline.py --lines 2000     # a quick run

Real print lines from ../shared/data/print-lines (repeated to ``--lines``, in page folders of 40)
are uploaded to a throwaway SeaweedFS; a throwaway Redis and Postgres database carry the work.
Three rows in one run, on the same lines:

- (a) ``stub``: two `pisar worker` processes whose ``generate`` answers instantly (with
  ``--stub-boto3`` once more with ``PISAR_S3_CLIENT=boto3``, the stub rate before obstore)
  (``bench/stub_engine``). Everything else is real: delivery, claim, lease, S3 fetch, PIL decode,
  preprocessing, the catalog commit. This is the system's own ceiling (issue 8: >= 2,000 lines/s).
- (b) ``model``: the same two workers running the demo model (``models/demo``, real weights).
- (c) ``bare``: the same model on the worker's read path (``read_lines`` in worker/batches.py: fetch,
  decode, preprocess, generate) in two plain processes, half the lines each: no Celery, no
  Redis, no catalog. ``model_vs_bare`` = (b) / (c) (issue 8: >= 0.9).

Each worker and bare process gets one torch thread (two on two cores). Rates of (a) and (b) come
from the catalog: lines over the span from the first shard's start to the last one's finish, so
worker start and model load are outside them. ``redis_bytes_per_queued_shard`` is measured on a
campaign submitted while no worker runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench_paths import DEMO_MODEL, PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from redis_memory import used_memory, waiting  # bench/ is on sys.path when a script here runs
from worker_path import report

PISAR = str(Path(sys.executable).with_name("pisar"))
STUB = Path(__file__).resolve().parent / "stub_engine"
BUCKET = "pipeline"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stub-boto3", action="store_true", help="row (a) again with PISAR_S3_CLIENT=boto3: the stub rate before obstore")
    parser.add_argument("--data", type=Path, default=PRINT_LINES)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-pipeline.json")
    return parser.parse_args(argv)


def key(number: int) -> str:
    return f"lines/page_{number // 40:05d}/line_{number:06d}.png"


def upload(client, images: list[bytes], count: int) -> dict[str, bytes]:  # boto3 client
    """Put ``count`` objects cycling through ``images``; returns key -> bytes."""
    objects = {key(i): images[i % len(images)] for i in range(count)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), objects.items()))
    return objects


def submit(env: dict[str, str], name: str, queue: str, shard_size: int) -> str:
    done = subprocess.run(
        [PISAR, "submit", f"s3://{BUCKET}/lines/", "--model", str(DEMO_MODEL), "--name", name, "--shard-size", str(shard_size)],
        env={**env, "PISAR_QUEUE": queue},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: submit failed: {done.stderr[-2000:]}")
    return done.stderr.strip().splitlines()[0]


def start_workers(env: dict[str, str], count: int, logs: Path, label: str, stack: ExitStack) -> None:
    """``count`` `pisar worker` processes, returned once each says it is ready (model loaded)."""
    procs = []
    for n in range(count):
        log = logs / f"{label}-{n}.log"
        proc = subprocess.Popen(
            [PISAR, "worker", f"--hostname={label}{n}@%h"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        stack.callback(stop, proc)
        procs.append((proc, log))
    deadline = time.monotonic() + 300
    while not all(" ready." in log.read_text(errors="replace") for _, log in procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
            raise SystemExit(f"bench: a worker did not start: {[log.read_text()[-1500:] for _, log in procs]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def run_campaign(env: dict[str, str], name: str, queue: str, lines: int, shard_size: int, logs: Path) -> dict[str, float]:
    """Submit, feed, wait for every shard to be done; the campaign's rate from the catalog."""
    from sqlalchemy import create_engine, text

    feeder = subprocess.Popen(
        [PISAR, "feed"],
        env={**env, "PISAR_QUEUE": queue},
        stdout=subprocess.DEVNULL,
        stderr=(logs / f"feed-{name}.log").open("w"),
        start_new_session=True,
    )
    try:
        said = submit(env, name, queue, shard_size)
        engine = create_engine(env["PISAR_DATABASE_URL"])
        query = text(
            "SELECT count(*) FILTER (WHERE s.state <> 'done'), sum(s.ok_lines + s.error_lines), sum(s.error_lines),"
            " min(s.started_at), max(s.finished_at), sum(s.load_seconds), sum(s.generate_seconds)"
            " FROM shard s JOIN campaign c ON c.id = s.campaign_id WHERE c.name = :n"
        )
        deadline = time.monotonic() + 3600
        while True:
            with engine.connect() as conn:
                open_shards, done, errors, first, last, load_s, generate_s = conn.execute(query, {"n": name}).one()
            if open_shards == 0 and done == lines:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: campaign {name} did not finish: {open_shards} shards open, {done} lines done")
            time.sleep(1)
        engine.dispose()
    finally:
        stop(feeder)
    seconds = (last - first).total_seconds()
    return {
        "lines_per_s": round(lines / seconds, 1),
        "seconds": round(seconds, 2),
        "error_lines": int(errors),
        "submit_said": said,
        # worker seconds per line: fetch + decode + preprocess (the input side), and generate
        "load_ms_per_line": round(1000 * load_s / lines, 3),
        "generate_ms_per_line": round(1000 * generate_s / lines, 3),
    }


def bare_part(keys: list[str], env: dict[str, str], batch_size: int, barrier, results) -> None:  # multiprocessing objects
    """One bare process: the worker's read path over ``keys``, timed from a common start."""
    os.environ.update(env)
    from worker_path import PisarRow

    from pisar.reader import GenerationOptions
    from pisar.reader.devices import set_threads
    from pisar.s3_storage import S3Storage
    from pisar.settings import Settings
    from pisar.worker.process_settings import apply_process_settings

    settings = Settings(torch_threads=1)
    apply_process_settings(settings)
    set_threads(1)  # as each worker of the distributed row runs (PISAR_TORCH_THREADS=1)
    row = PisarRow(
        DEMO_MODEL, S3Storage(BUCKET, "lines/", settings), "float32", batch_size, "cpu", 4, GenerationOptions.greedy().overrides()
    )
    row.run(keys[: batch_size * 2])  # warm-up, as the workers have read a batch before their span starts
    barrier.wait()
    results.put(row.run(keys))
    row.close()


def bare(keys: list[str], env: dict[str, str], batch_size: int, processes: int) -> float:
    """Lines/s of ``processes`` bare processes started together, each on its share of ``keys``."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shares = [keys[i::processes] for i in range(processes)]
    procs = [context.Process(target=bare_part, args=(share, env, batch_size, barrier, results)) for share in shares]
    for proc in procs:
        proc.start()
    elapsed = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    return len(keys) / max(elapsed)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from infra.local_services import ensure_postgres, start_redis, start_seaweedfs, throwaway_database, unconfigured_env

    images = [p.read_bytes() for p in sorted(args.data.glob("*.png"))]
    if not images:
        raise SystemExit(f"bench: no .png line images in {args.data}")
    work = Path(tempfile.mkdtemp(prefix="pisar-bench-pipeline-"))
    logs = work / "logs"
    logs.mkdir()
    with ExitStack() as stack:
        weed = start_seaweedfs(work / "weed")
        stack.callback(weed.stop)
        redis = start_redis(work / "redis", aof=False)
        stack.callback(redis.stop)
        database_url = stack.enter_context(throwaway_database(ensure_postgres(), "pisar_bench_pipeline"))
        env = unconfigured_env()
        env.update(weed.env)
        env.update(
            {
                "PISAR_REDIS_URL": redis.url,
                "PISAR_DATABASE_URL": database_url,
                "PISAR_TORCH_THREADS": "1",
                "PISAR_FETCH_THREADS": "4",
                "PISAR_BATCH_SIZE": str(args.batch_size),
                "PISAR_METRICS_PORT": "0",
                "PISAR_MODEL": str(DEMO_MODEL),
                "PISAR_LIST_THREADS": "2",
                "PISAR_FEED_INTERVAL_SECONDS": "0.5",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "bench"), env.get("PYTHONPATH")])),
            }
        )
        client = weed.s3_client()
        client.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        objects = upload(client, images, args.lines)
        upload_s = time.perf_counter() - started

        before = used_memory(redis.url)
        submit(env, "queued", "bench-idle", max(1, args.lines // 500))  # no worker here: what a queued shard costs Redis
        queued = waiting(redis.url, "bench-idle")
        bytes_per_shard = (used_memory(redis.url) - before) / queued

        with ExitStack() as workers:
            stub_env = {
                **env,
                "PYTHONPATH": f"{STUB}{os.pathsep}{env['PYTHONPATH']}",
                "PISAR_BENCH_STUB_ENGINE": "1",
                "PISAR_QUEUE": "bench-stub",
            }
            start_workers(stub_env, args.workers, logs, "stub", workers)
            stub = run_campaign(stub_env, "stub", "bench-stub", args.lines, args.shard_size, logs)
        stub_boto3 = None
        if args.stub_boto3:
            with ExitStack() as workers:
                boto3_env = {**stub_env, "PISAR_S3_CLIENT": "boto3", "PISAR_QUEUE": "bench-stub-boto3"}
                start_workers(boto3_env, args.workers, logs, "stub-boto3", workers)
                stub_boto3 = run_campaign(boto3_env, "stub-boto3", "bench-stub-boto3", args.lines, args.shard_size, logs)
        with ExitStack() as workers:
            model_env = {**env, "PISAR_QUEUE": "bench-model"}
            start_workers(model_env, args.workers, logs, "model", workers)
            model = run_campaign(model_env, "model", "bench-model", args.lines, args.shard_size, logs)
        bare_rate = bare(sorted(objects), env, args.batch_size, args.workers)

    shutil.rmtree(work, ignore_errors=True)
    figures = {
        "lines": args.lines,
        "stub_lines_per_s": stub["lines_per_s"],
        "model_lines_per_s": model["lines_per_s"],
        "bare_engine_lines_per_s": round(bare_rate, 1),
        "model_vs_bare": round(model["lines_per_s"] / bare_rate, 3),
        "redis_bytes_per_queued_shard": round(bytes_per_shard),
        "queued_shards_measured": queued,
        "workers": args.workers,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "shards": int(re.search(r"lines in (\d+) shards", model["submit_said"]).group(1)),
        "stub_seconds": stub["seconds"],
        "stub_load_ms_per_line": stub["load_ms_per_line"],  # the input side of a worker, per line, summed over workers
        "stub_generate_ms_per_line": stub["generate_ms_per_line"],
        "model_load_ms_per_line": model["load_ms_per_line"],
        "model_generate_ms_per_line": model["generate_ms_per_line"],
        "model_seconds": model["seconds"],
        "error_lines": stub["error_lines"] + model["error_lines"],
        "upload_seconds": round(upload_s, 1),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if stub_boto3 is not None:
        figures["stub_boto3_lines_per_s"] = stub_boto3["lines_per_s"]
        figures["stub_boto3_load_ms_per_line"] = stub_boto3["load_ms_per_line"]
        figures["stub_obstore_vs_boto3"] = round(stub["lines_per_s"] / stub_boto3["lines_per_s"], 3)
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
