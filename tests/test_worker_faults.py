"""Faults injected around a running campaign, on real SeaweedFS, Redis, Postgres and Celery worker subprocesses.

- SIGKILL: the lease expires, `pisar reap` re-queues the shard, another worker finishes it, and
  every line is written exactly once.
- SIGTERM: warm shutdown finishes the running shard; nothing is left half-written or leased.
- A line that kills the worker process (a simulated native crash, ``tests/crash_hook``) is found by
  running its shard line by line, set aside as ``WorkerCrash``, and the rest of the shard finishes.
- The same campaign submitted twice and every shard published twice: refused, then skipped.
- Redis (with a password) killed and restarted mid-campaign, with AOF and without persistence, or flushed.
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

from tests.chaos import LINES as LINE_TABLE
from tests.chaos import SHARDS, real_lines, submit
from tests.conftest import PISAR, run_pisar, wait_until

LINES = 120
SHARD_SIZE = 60
LEASE = 10  # seconds: the heartbeat renews every ~3 s, so a dead worker's lease expires within 10 s


def start_reaper(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PISAR, "reap"], env={**env, "PISAR_REAP_INTERVAL_SECONDS": "1"}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def test_a_killed_workers_shard_is_reaped_and_finished_once(s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path) -> None:  # noqa: ANN001
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_BATCH_SIZE": "2"}
    campaign = submit(s3, env, "reap", real_lines(print_lines, LINES), tiny_model, SHARD_SIZE)
    victim = start_worker(env, "victim")
    wait_until(lambda: campaign.states().get("running", 0) >= 1, 120, "the victim to start a shard", interval=0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # no warm shutdown, no release: what a preempted node does
    victim.wait()
    with campaign.engine.connect() as conn:
        orphan = conn.execute(select(SHARDS.c.id, SHARDS.c.attempts).where(SHARDS.c.state == "running")).one()
    assert orphan.attempts == 1

    start_worker(env, "survivor")
    # The survivor skips the orphan while its lease is live (Redis would redeliver only after hours),
    # then the reaper re-queues it once the lease has expired.
    wait_until(lambda: campaign.done() == LINES // SHARD_SIZE - 1, 180, "the other shard done")

    def reaped() -> bool:
        result = run_pisar(["reap", "--once"], env)
        assert result.returncode == 0, result.stderr
        return "reaped 1 shards back to the queue" in result.stderr

    wait_until(reaped, 60, "the orphan's lease to expire and the reaper to re-queue it", interval=2)
    wait_until(lambda: campaign.states() == {"done": LINES // SHARD_SIZE}, 180, "every shard done")
    with campaign.engine.connect() as conn:
        row = conn.execute(select(SHARDS.c.attempts, SHARDS.c.worker).where(SHARDS.c.id == orphan.id)).one()
    assert row.attempts == 2 and row.worker.startswith("survivor")
    campaign.assert_every_line_once(LINES)
    assert campaign.line_statuses() == {"ok": LINES}


def test_sigterm_finishes_the_running_shard_and_writes_nothing_half(
    s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path
) -> None:  # noqa: ANN001
    env = {**distributed_env, "PISAR_BATCH_SIZE": "2"}
    campaign = submit(s3, env, "term", real_lines(print_lines, LINES), tiny_model, SHARD_SIZE)
    worker = start_worker(env, "stopping")
    wait_until(lambda: campaign.states().get("running", 0) == 1, 120, "the worker to start a shard", interval=0.05)
    worker.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send first
    assert worker.wait(timeout=120) == 0
    with campaign.engine.connect() as conn:
        shard_rows = conn.execute(select(SHARDS.c.id, SHARDS.c.state, SHARDS.c.line_count)).all()
        written = select(LINE_TABLE.c.shard_id, func.count()).where(LINE_TABLE.c.status != "pending").group_by(LINE_TABLE.c.shard_id)
        by_shard = dict(conn.execute(written).all())
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
        "PISAR_MAX_ATTEMPTS": "2",
        "PISAR_TEST_CRASH_HOOK": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    objects = real_lines(print_lines, LINES)
    poison = sorted(objects)[7]
    objects[poison] += MARKER  # still a valid PNG: the bytes after IEND are ignored by decoders
    campaign = submit(s3, env, "poison", objects, tiny_model, SHARD_SIZE)
    worker = start_worker(env, "crashy")
    reaper = start_reaper(env, tmp_path / "reaper.log")
    try:
        wait_until(lambda: campaign.states() == {"done": LINES // SHARD_SIZE}, 240, "both shards done despite the crashing line")
    finally:
        stop(reaper)
    assert worker.poll() is None  # Celery replaced the dead child; the worker lives on
    with campaign.engine.connect() as conn:
        rows = {r.key: r for r in conn.execute(select(LINE_TABLE)).all()}
        poisoned_shard = conn.execute(select(SHARDS).where(SHARDS.c.id == rows[poison].shard_id)).one()
    assert (rows[poison].status, rows[poison].error_class) == ("error", "WorkerCrash")
    assert all(r.status == "ok" and r.text for k, r in rows.items() if k != poison)  # the rest of its shard finished
    campaign.assert_every_line_once(LINES)
    # Attempt 1 died in a batch (line unknown); attempt 2, line by line, died on the poison and named it
    # without spending the attempt; attempt 2 again finished the rest: never quarantined at max 2.
    assert poisoned_shard.attempts == 2 and poisoned_shard.probe_key is None
    assert f"set aside {poison}" in (tmp_path / "reaper.log").read_text(encoding="utf-8")


def test_a_campaign_submitted_twice_and_published_twice_is_written_once(
    s3,  # noqa: ANN001
    distributed_env,  # noqa: ANN001
    start_worker,  # noqa: ANN001
    tiny_model: Path,
    print_lines: Path,
) -> None:
    env = distributed_env
    campaign = submit(s3, env, "twice", real_lines(print_lines, LINES), tiny_model, SHARD_SIZE)
    again = run_pisar(["submit", "s3://twice/vol", "--model", str(tiny_model), "--name", "twice"], env)  # a double click
    assert again.returncode != 0 and "campaign 'twice' already exists" in again.stderr
    resumed = run_pisar(["resume", "twice"], env)  # every shard published a second time while still queued
    assert resumed.returncode == 0 and f"{LINES // SHARD_SIZE} shards not done" in resumed.stderr

    def finished() -> bool:
        with campaign.engine.connect() as conn:
            skipped = conn.execute(select(func.sum(SHARDS.c.duplicate_deliveries))).scalar_one()
        return campaign.states() == {"done": LINES // SHARD_SIZE} and skipped == LINES // SHARD_SIZE

    start_worker(env, "w1")
    start_worker(env, "w2")
    wait_until(finished, 180, "every shard done and every second message skipped")
    with campaign.engine.connect() as conn:
        attempts = {a for (a,) in conn.execute(select(SHARDS.c.attempts)).all()}
    campaign.assert_every_line_once(LINES)
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
    name, shard_size = f"redis-{fault}-{'aof' if aof else 'plain'}", 20
    campaign = submit(s3, env, name, real_lines(print_lines, LINES), tiny_model, shard_size)
    try:
        worker = start_worker(env, "steady")
        wait_until(lambda: campaign.done() >= 1, 180, "a first shard done")
        if fault == "flushall":
            import redis as redis_client

            redis_client.Redis.from_url(redis.url).flushall()
        else:
            time.sleep(1.5)  # AOF fsyncs every second
            redis.proc.kill()  # SIGKILL: no final save
            redis.proc.wait()
            redis = start_redis(tmp_path / "redis", port, aof=aof, password="s3cret-pw")
        if not aof or fault == "flushall":
            resumed = run_pisar(["resume", name], env)
            assert resumed.returncode == 0, resumed.stderr
        wait_until(lambda: campaign.done() == LINES // shard_size, 240, "every shard done after the restart")
        assert worker.poll() is None  # the worker reconnected rather than dying
    finally:
        redis.stop()
    campaign.assert_every_line_once(LINES)
    assert campaign.line_statuses() == {"ok": LINES}


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
    env = {**distributed_env, "PISAR_LEASE_SECONDS": str(LEASE), "PISAR_OUTAGE_RETRY_SECONDS": "2", "PISAR_BATCH_SIZE": "4"}
    shard_size = 10
    campaign = submit(s3, env, "pg-outage", real_lines(print_lines, LINES), tiny_model, shard_size)
    worker = start_worker({**env, "PISAR_DATABASE_URL": proxied}, "cut-off")
    reaper = start_reaper(env, tmp_path / "reaper.log")
    try:
        wait_until(lambda: campaign.done() >= 2, 180, "two shards done before the outage")
        proxy.cut()
        time.sleep(10)
        proxy.restore()
        try:
            wait_until(lambda: campaign.done() == LINES // shard_size, 240, "every shard done after the outage")
        except AssertionError as exc:  # say where it stuck: shard states and the worker's last words
            tail = (tmp_path / "cut-off.log").read_text(encoding="utf-8").splitlines()[-15:]
            raise AssertionError(f"{exc}; shards {campaign.states()}; worker log:\n" + "\n".join(tail)) from None
    finally:
        stop(reaper)
        proxy.close()
    assert worker.poll() is None
    campaign.assert_every_line_once(LINES)
    assert campaign.line_statuses() == {"ok": LINES}  # the outage failed no line
    assert campaign.states() == {"done": LINES // shard_size}  # and no shard
    assert "catalog unreachable" in (tmp_path / "cut-off.log").read_text(encoding="utf-8")  # the outage really hit the worker


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
        shard_size = 10
        campaign = submit(s3, env, "weed-restart", real_lines(print_lines, LINES), tiny_model, shard_size)
        worker = start_worker(env, "reader")
        wait_until(lambda: campaign.done() >= 2, 180, "two shards done before the restart")
        os.killpg(weed.proc.pid, signal.SIGKILL)
        weed.proc.wait()
        time.sleep(5)
        weed = start_seaweedfs(tmp_path / "weed", weed.ports)
        wait_until(lambda: campaign.done() == LINES // shard_size, 300, "every shard done after the restart")
        assert worker.poll() is None
    finally:
        weed.stop()
    campaign.assert_every_line_once(LINES)
    assert campaign.line_statuses() == {"ok": LINES}  # no line was marked failed for the store's absence
    with campaign.engine.connect() as conn:
        assert conn.execute(select(func.max(SHARDS.c.attempts))).scalar_one() == 1  # and no shard spent an attempt on it
