"""Back-pressure and priorities (`producer/feeder.py`) with real Redis, Postgres, Celery workers and line images.

Redis must hold at most the high-water mark of shard messages per queue and priority, whatever the
campaign size; the feeder tops a queue up once fewer than the low-water mark wait; an urgent
campaign's shards are popped before a running large campaign's.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from pisar.queue import priority_lists
from tests.helpers.cli import PISAR, run_pisar, wait_until
from tests.helpers.paths import DEMO_MODEL


def line_folder(print_lines: Path, folder: Path, count: int) -> Path:
    folder.mkdir()
    for path in sorted(print_lines.glob("*.png"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def waiting(env: dict[str, str]) -> dict[int, int]:
    """Messages in Redis per campaign priority, for this test's queue."""
    client = redis.Redis.from_url(env["PISAR_REDIS_URL"])
    try:
        return {p: n for p, key in priority_lists(env["PISAR_QUEUE"]) if (n := client.llen(key))}
    finally:
        client.close()


def take(env: dict[str, str], count: int, priority: int = 5) -> None:
    """Pop messages of one priority the way a worker would, oldest first, without running them."""
    key = dict(priority_lists(env["PISAR_QUEUE"]))[priority]
    client = redis.Redis.from_url(env["PISAR_REDIS_URL"])
    for _ in range(count):
        assert client.rpop(key) is not None
    client.close()


def shard_states(env: dict[str, str], campaign: str) -> dict[str, int]:
    with create_engine(env["PISAR_DATABASE_URL"]).connect() as conn:
        rows = conn.execute(
            text("SELECT s.state, count(*) FROM shard s JOIN campaign c ON c.id = s.campaign_id WHERE c.name = :n GROUP BY s.state"),
            {"n": campaign},
        )
        return dict(rows.all())


def submit(env: dict[str, str], source: Path, name: str, *args: str) -> str:
    done = run_pisar(["submit", str(source), "--model", str(DEMO_MODEL), "--name", name, "--shard-size", "1", *args], env)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_redis_holds_at_most_the_high_water_mark_and_the_feeder_tops_it_up(
    print_lines: Path, distributed_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**distributed_env, "PISAR_QUEUE_HIGH_WATER": "6", "PISAR_QUEUE_LOW_WATER": "3"}
    source = line_folder(print_lines, tmp_path / "large", 30)

    said = submit(env, source, "large")
    assert "30 lines in 30 shards, 6 published" in said and "`pisar feed` publishes the rest" in said
    assert waiting(env) == {5: 6} and shard_states(env, "large") == {"queued": 6, "pending": 24}

    take(env, 4)  # workers took four: two wait, under the low-water mark
    fed = run_pisar(["feed", "--once"], env)
    assert fed.returncode == 0, fed.stderr
    assert "2 waiting, published 4 (4 of large)" in fed.stderr
    assert waiting(env) == {5: 6} and shard_states(env, "large") == {"queued": 10, "pending": 20}

    take(env, 2)  # four wait: above the low-water mark, so nothing is sent
    assert run_pisar(["feed", "--once"], env).stderr == ""
    assert waiting(env) == {5: 4} and shard_states(env, "large") == {"queued": 10, "pending": 20}

    said = submit(env, line_folder(print_lines, tmp_path / "urgent", 3), "urgent", "--priority", "9")
    assert "3 lines in 3 shards, 3 published" in said  # nothing of its priority or above was waiting
    assert waiting(env) == {5: 4, 9: 3}


@pytest.mark.slow
def test_an_urgent_campaign_overtakes_a_running_large_one(
    print_lines: Path,
    distributed_env: dict[str, str],
    start_worker,
    tmp_path: Path,
) -> None:
    """One real worker and a real `pisar feed` loop; Redis never holds more than the windows allow."""
    env = {**distributed_env, "PISAR_QUEUE_HIGH_WATER": "4", "PISAR_QUEUE_LOW_WATER": "2", "PISAR_FEED_INTERVAL_SECONDS": "0.5"}
    submit(env, line_folder(print_lines, tmp_path / "large", 16), "large")
    submit(env, line_folder(print_lines, tmp_path / "urgent", 3), "urgent", "--priority", "9")
    assert waiting(env) == {5: 4, 9: 3}

    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], sum(waiting(env).values()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    feeder = subprocess.Popen([PISAR, "feed"], env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "feed.log").open("w"))
    try:
        start_worker(env, "w1")
        wait_until(lambda: shard_states(env, "large") == {"done": 16} and shard_states(env, "urgent") == {"done": 3}, 240, "both campaigns")
    finally:
        done.set()
        watcher.join()
        feeder.terminate()
        feeder.wait(timeout=30)

    with create_engine(env["PISAR_DATABASE_URL"]).connect() as conn:
        order = (
            conn.execute(text("SELECT c.name FROM shard s JOIN campaign c ON c.id = s.campaign_id ORDER BY s.started_at, s.id"))
            .scalars()
            .all()
        )
    assert order[:3] == ["urgent"] * 3, order  # popped before the four large shards already waiting
    assert peak[0] <= 7, f"Redis held {peak[0]} messages, more than the two windows of 4 and 3"
    assert "published" in (tmp_path / "feed.log").read_text(encoding="utf-8")


def test_priority_lists_are_the_ones_kombu_pops(distributed_env: dict[str, str]) -> None:
    """The feeder counts the very lists kombu's Redis transport pushes to and pops, in its order."""
    from pisar.queue import configure, message_priority
    from pisar.settings import Settings

    app = configure(Settings(redis_url=distributed_env["PISAR_REDIS_URL"]))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        popped_in_order = [channel._q_for_pri("q", step) for step in channel.priority_steps]  # as _brpop_start builds its keys
        assert popped_in_order == [key for _, key in priority_lists("q")]
        assert channel._q_for_pri("q", message_priority(9)) == "q"  # the most urgent campaign is popped first
