"""Workers stopped mid-shard, on real SeaweedFS, Redis, Postgres and Celery worker subprocesses.

- SIGKILL: the lease expires, `pisar reap` re-queues the shard, another worker finishes it, and
  every line is written exactly once.
- SIGTERM: warm shutdown finishes the running shard; nothing is left half-written or leased.
- A line that kills the worker process (a simulated native crash, ``tests/crash_hook``) is found by
  running its shard line by line, set aside as ``WorkerCrash``, and the rest of the shard finishes.
- The same campaign submitted twice and every shard published twice: refused, then skipped.
- Redis (with a password) killed and restarted mid-campaign, with AOF and without persistence.
- Postgres unreachable for 10 s, and SeaweedFS killed and restarted: work stalls, nothing fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, Shard
from pisar.settings import Settings
from tests.conftest import PISAR, run_pisar, wait_until
from tests.test_end_to_end import upload

LINES = 120
SHARD_SIZE = 60
LEASE = 10  # seconds: the heartbeat renews every ~3 s, so a dead worker's lease expires within 10 s


def test_a_killed_workers_shard_is_reaped_and_finished_once(s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path) -> None:  # noqa: ANN001
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_BATCH_SIZE": "2"}
    s3.create_bucket(Bucket="reap")
    upload(s3, "reap", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    submitted = run_pisar(["submit", "s3://reap/vol", "--model", str(tiny_model), "--name", "reap", "--shard-size", str(SHARD_SIZE)], env)
    assert submitted.returncode == 0, submitted.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    def states() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.execute(select(shards.c.state, func.count()).group_by(shards.c.state)).all())

    victim = start_worker(env, "victim")
    wait_until(lambda: states().get("running", 0) >= 1, 120, "the victim to start a shard", interval=0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # no warm shutdown, no release: what a preempted node does
    victim.wait()
    with engine.connect() as conn:
        orphan = conn.execute(select(shards.c.id, shards.c.attempts).where(shards.c.state == "running")).one()
    assert orphan.attempts == 1

    start_worker(env, "survivor")
    # The survivor skips the orphan while its lease is live (Redis would redeliver only after hours),
    # then the reaper re-queues it once the lease has expired.
    wait_until(lambda: states().get("done", 0) == LINES // SHARD_SIZE - 1, 180, "the other shard done")

    def reaped() -> bool:
        result = run_pisar(["reap", "--once"], env)
        assert result.returncode == 0, result.stderr
        return "reaped 1 shards back to the queue" in result.stderr

    wait_until(reaped, 60, "the orphan's lease to expire and the reaper to re-queue it", interval=2)
    wait_until(lambda: states() == {"done": LINES // SHARD_SIZE}, 180, "every shard done")
    with engine.connect() as conn:
        row = conn.execute(select(shards.c.attempts, shards.c.worker).where(shards.c.id == orphan.id)).one()
        per_key = conn.execute(select(lines.c.key, func.count()).group_by(lines.c.key)).all()
        statuses = dict(conn.execute(select(lines.c.status, func.count()).group_by(lines.c.status)).all())
    assert row.attempts == 2 and row.worker.startswith("survivor")
    assert len(per_key) == LINES and {n for _, n in per_key} == {1}  # nothing lost, nothing duplicated
    assert statuses == {"ok": LINES}


def test_sigterm_finishes_the_running_shard_and_writes_nothing_half(
    s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path
) -> None:  # noqa: ANN001
    env = {**distributed_env, "PISAR_BATCH_SIZE": "2"}
    s3.create_bucket(Bucket="term")
    upload(s3, "term", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    submitted = run_pisar(["submit", "s3://term/vol", "--model", str(tiny_model), "--name", "term", "--shard-size", str(SHARD_SIZE)], env)
    assert submitted.returncode == 0, submitted.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    def running() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(shards.c.state == "running")).scalar_one() == 1

    worker = start_worker(env, "stopping")
    wait_until(running, 120, "the worker to start a shard", interval=0.05)
    worker.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send first
    assert worker.wait(timeout=120) == 0
    with engine.connect() as conn:
        shard_rows = conn.execute(select(shards.c.id, shards.c.state, shards.c.line_count)).all()
        by_shard = dict(
            conn.execute(select(lines.c.shard_id, func.count()).where(lines.c.status != "pending").group_by(lines.c.shard_id)).all()
        )
    assert "running" not in {r.state for r in shard_rows}  # nothing left holding a lease
    assert "done" in {r.state for r in shard_rows}  # the shard it was running was finished, not dropped
    for row in shard_rows:  # a shard is written whole or not at all
        assert by_shard.get(row.id, 0) == (row.line_count if row.state == "done" else 0)


def test_a_line_that_crashes_the_worker_is_set_aside_and_the_rest_finishes(
    s3,  # noqa: ANN001
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
    tmp_path: Path,
) -> None:
    from tests.crash_hook.sitecustomize import MARKER

    hook = Path(__file__).parent / "crash_hook"
    env = {
        **distributed_env,
        "PISAR_LEASE_SECONDS": str(LEASE),
        "PISAR_REAP_INTERVAL_SECONDS": "1",
        "PISAR_MAX_ATTEMPTS": "2",
        "PISAR_TEST_CRASH_HOOK": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    paths = sorted(print_lines.glob("*.png"))[:LINES]
    objects = {f"vol/{p.name}": p.read_bytes() for p in paths}
    poison = f"vol/{paths[7].name}"
    objects[poison] += MARKER  # still a valid PNG: the bytes after IEND are ignored by decoders
    s3.create_bucket(Bucket="poison")
    upload(s3, "poison", objects)
    submitted = run_pisar(
        ["submit", "s3://poison/vol", "--model", str(tiny_model), "--name", "poison", "--shard-size", str(SHARD_SIZE)], env
    )
    assert submitted.returncode == 0, submitted.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    worker = start_worker(env, "crashy")
    reaper_log = tmp_path / "reaper.log"
    reaper = subprocess.Popen([PISAR, "reap"], env=env, stdout=reaper_log.open("w"), stderr=subprocess.STDOUT)
    try:

        def all_done() -> bool:
            with engine.connect() as conn:
                return {s for (s,) in conn.execute(select(shards.c.state)).all()} == {"done"}

        wait_until(all_done, 240, "both shards done despite the crashing line")
    finally:
        reaper.terminate()
        reaper.wait(timeout=30)
    assert worker.poll() is None  # Celery replaced the dead child; the worker lives on
    with engine.connect() as conn:
        rows = {r.key: r for r in conn.execute(select(lines)).all()}
        poisoned_shard = conn.execute(select(shards).where(shards.c.id == rows[poison].shard_id)).one()
    assert (rows[poison].status, rows[poison].error_class) == ("error", "WorkerCrash")
    assert all(r.status == "ok" and r.text for k, r in rows.items() if k != poison)  # the rest of its shard finished
    assert len(rows) == LINES
    # Attempt 1 died in a batch (line unknown); attempt 2, line by line, died on the poison and named it
    # without spending the attempt; attempt 2 again finished the rest: never quarantined at max 2.
    assert poisoned_shard.attempts == 2 and poisoned_shard.probe_key is None
    log = reaper_log.read_text(encoding="utf-8")
    assert f"set aside {poison}" in log


def test_a_campaign_submitted_twice_and_published_twice_is_written_once(
    s3,  # noqa: ANN001
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
) -> None:
    env = distributed_env
    s3.create_bucket(Bucket="twice")
    upload(s3, "twice", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    submit = ["submit", "s3://twice/vol", "--model", str(tiny_model), "--name", "twice", "--shard-size", str(SHARD_SIZE)]
    assert run_pisar(submit, env).returncode == 0
    again = run_pisar(submit, env)  # an operator's double click, a retried CI job
    assert again.returncode != 0 and "campaign 'twice' already exists" in again.stderr
    resumed = run_pisar(["resume", "twice"], env)  # every shard published a second time while still queued
    assert resumed.returncode == 0 and f"{LINES // SHARD_SIZE} shards not done" in resumed.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    def finished() -> bool:
        with engine.connect() as conn:
            states = {s for (s,) in conn.execute(select(shards.c.state)).all()}
            skipped = conn.execute(select(func.sum(shards.c.duplicate_deliveries))).scalar_one()
        return states == {"done"} and skipped == LINES // SHARD_SIZE

    start_worker(env, "w1")
    start_worker(env, "w2")
    wait_until(finished, 180, "every shard done and every second message skipped")
    with engine.connect() as conn:
        per_key = conn.execute(select(lines.c.key, func.count()).group_by(lines.c.key)).all()
        attempts = {a for (a,) in conn.execute(select(shards.c.attempts)).all()}
    assert len(per_key) == LINES and {n for _, n in per_key} == {1}
    assert attempts == {1}  # each shard ran once; its duplicate was skipped, not re-run


@pytest.mark.parametrize(
    ("aof", "fault"), [(True, "restart"), (False, "restart"), (True, "flushall")], ids=["aof", "no-persistence", "flushall"]
)
def test_redis_restarted_mid_campaign_loses_nothing(
    s3,  # noqa: ANN001
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
    tmp_path: Path,
    aof: bool,
    fault: str,
) -> None:
    """Redis killed (SIGKILL) and restarted on the same port while a worker runs, or flushed; with a password.

    With AOF the queue survives a restart and the campaign finishes by itself; without persistence,
    or after FLUSHALL, the queue is gone and `pisar resume` re-publishes from the catalog. Every line once.
    """
    from infra.local_services import start_redis

    redis = start_redis(tmp_path / "redis", aof=aof, password="s3cret-pw")
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    env = {**distributed_env, "PISAR_REDIS_URL": redis.url, "PISAR_BATCH_SIZE": "4"}
    shard_size = 20
    bucket = f"redis-{fault}-{'aof' if aof else 'plain'}"
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    submitted = run_pisar(
        ["submit", f"s3://{bucket}/vol", "--model", str(tiny_model), "--name", "redis", "--shard-size", str(shard_size)], env
    )
    assert submitted.returncode == 0, submitted.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    def done() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(shards.c.state == "done")).scalar_one()

    try:
        worker = start_worker(env, "steady")
        wait_until(lambda: done() >= 1, 180, "a first shard done")
        if fault == "flushall":
            import redis as redis_client

            redis_client.Redis.from_url(redis.url).flushall()
        else:
            time.sleep(1.5)  # AOF fsyncs every second
            redis.proc.kill()  # SIGKILL: no final save
            redis.proc.wait()
            redis = start_redis(tmp_path / "redis", port, aof=aof, password="s3cret-pw")
        if not aof or fault == "flushall":
            resumed = run_pisar(["resume", "redis"], env)
            assert resumed.returncode == 0, resumed.stderr
        wait_until(lambda: done() == LINES // shard_size, 240, "every shard done after the restart")
        assert worker.poll() is None  # the worker reconnected rather than dying
    finally:
        redis.stop()
    with engine.connect() as conn:
        per_key = conn.execute(select(lines.c.key, func.count()).group_by(lines.c.key)).all()
        statuses = {s for (s,) in conn.execute(select(lines.c.status)).all()}
    assert len(per_key) == LINES and {n for _, n in per_key} == {1} and statuses == {"ok"}


def test_postgres_unreachable_for_ten_seconds_stalls_work_and_fails_nothing(
    s3,  # noqa: ANN001
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
    tmp_path: Path,
) -> None:
    """Every connection to the catalog is reset and refused for 10 s while the worker commits."""
    from sqlalchemy.engine import make_url

    from tests.tcp_proxy import CuttableProxy

    direct = make_url(distributed_env["PISAR_DATABASE_URL"])
    proxy = CuttableProxy(direct.port or 5432, direct.host or "127.0.0.1")
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {
        **distributed_env,
        "PISAR_LEASE_SECONDS": str(LEASE),
        "PISAR_OUTAGE_RETRY_SECONDS": "2",
        "PISAR_REAP_INTERVAL_SECONDS": "1",
        "PISAR_BATCH_SIZE": "4",
    }
    shard_size = 10
    s3.create_bucket(Bucket="pg-outage")
    upload(s3, "pg-outage", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    submitted = run_pisar(
        ["submit", "s3://pg-outage/vol", "--model", str(tiny_model), "--name", "pg", "--shard-size", str(shard_size)], env
    )
    assert submitted.returncode == 0, submitted.stderr
    engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
    shards, lines = Shard.__table__, Line.__table__

    def done() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(shards.c.state == "done")).scalar_one()

    worker = start_worker({**env, "PISAR_DATABASE_URL": proxied}, "cut-off")
    reaper = subprocess.Popen([PISAR, "reap"], env=env, stdout=(tmp_path / "reaper.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: done() >= 2, 180, "two shards done before the outage")
        proxy.cut()
        time.sleep(10)
        proxy.restore()
        wait_until(lambda: done() == LINES // shard_size, 240, "every shard done after the outage")
    finally:
        reaper.terminate()
        reaper.wait(timeout=30)
        proxy.close()
    assert worker.poll() is None
    with engine.connect() as conn:
        per_key = conn.execute(select(lines.c.key, func.count()).group_by(lines.c.key)).all()
        statuses = {s for (s,) in conn.execute(select(lines.c.status)).all()}
        shard_states = {s for (s,) in conn.execute(select(shards.c.state)).all()}
    assert len(per_key) == LINES and {n for _, n in per_key} == {1}
    assert statuses == {"ok"} and shard_states == {"done"}  # the outage failed no line and no shard
    log = next(tmp_path.glob("cut-off.log")).read_text(encoding="utf-8")
    assert "catalog unreachable" in log  # the outage really hit the worker


def test_seaweedfs_restarted_mid_campaign_stalls_work_and_fails_nothing(
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
    tmp_path: Path,
) -> None:
    """The object store is killed (SIGKILL) for 5 s and started again on its data while a worker reads."""
    import boto3

    from infra.local_services import start_seaweedfs

    weed = start_seaweedfs(tmp_path / "weed")
    try:
        env = {**distributed_env, **weed.env, "PISAR_OUTAGE_RETRY_SECONDS": "2", "PISAR_BATCH_SIZE": "4", "PISAR_LEASE_SECONDS": str(LEASE)}
        s3 = boto3.client(
            "s3",
            endpoint_url=weed.url,
            aws_access_key_id=weed.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=weed.env["AWS_SECRET_ACCESS_KEY"],
            region_name=weed.env["AWS_DEFAULT_REGION"],
        )
        s3.create_bucket(Bucket="restart")
        upload(s3, "restart", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
        shard_size = 10
        submitted = run_pisar(
            ["submit", "s3://restart/vol", "--model", str(tiny_model), "--name", "weed", "--shard-size", str(shard_size)], env
        )
        assert submitted.returncode == 0, submitted.stderr
        engine = get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url)
        shards, lines = Shard.__table__, Line.__table__

        def done() -> int:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).where(shards.c.state == "done")).scalar_one()

        worker = start_worker(env, "reader")
        wait_until(lambda: done() >= 2, 180, "two shards done before the restart")
        os.killpg(weed.proc.pid, signal.SIGKILL)
        weed.proc.wait()
        time.sleep(5)
        weed = start_seaweedfs(tmp_path / "weed", weed.ports)
        wait_until(lambda: done() == LINES // shard_size, 300, "every shard done after the restart")
        assert worker.poll() is None
    finally:
        weed.stop()
    with engine.connect() as conn:
        per_key = conn.execute(select(lines.c.key, func.count()).group_by(lines.c.key)).all()
        statuses = {s for (s,) in conn.execute(select(lines.c.status)).all()}
        max_attempts = conn.execute(select(func.max(shards.c.attempts))).scalar_one()
    assert len(per_key) == LINES and {n for _, n in per_key} == {1}
    assert statuses == {"ok"}  # no line was marked failed for the store's absence
    assert max_attempts == 1  # and no shard spent an attempt on it
