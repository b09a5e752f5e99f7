"""`pisar flower` shows Pisar's workers and finished run_shard tasks (task events are on)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from infra.local_services import free_port, port_open, wait_for
from tests.conftest import PISAR, run_pisar, wait_until
from tests.test_end_to_end import upload


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test server
        return json.load(response)


def test_flower_shows_worker_and_tasks(s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    env = {**distributed_env, "FLOWER_UNAUTHENTICATED_API": "1"}  # issue 7 adds auth; this checks what Flower sees
    flower = subprocess.Popen(
        [PISAR, "flower", f"--port={port}"], env=env, stdout=(tmp_path / "flower.log").open("w"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: port_open(port), "flower", 60, flower)
        start_worker(distributed_env, "seen")
        s3.create_bucket(Bucket="flower")
        upload(s3, "flower", {f"v/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:6]})
        submitted = run_pisar(["submit", "s3://flower/v", "--model", str(tiny_model), "--name", "flower", "--shard-size", "3"], env)
        assert submitted.returncode == 0, submitted.stderr
        base = f"http://127.0.0.1:{port}"

        def tasks_succeeded() -> bool:
            tasks = get_json(f"{base}/api/tasks")
            return sum(1 for t in tasks.values() if t["name"] == "pisar.run_shard" and t["state"] == "SUCCESS") == 2

        wait_until(tasks_succeeded, 120, "Flower to show two successful run_shard tasks")
        tasks = get_json(f"{base}/api/tasks")
        assert all(t["worker"].startswith("seen@") for t in tasks.values())
        assert sorted(json.loads(t["args"]) for t in tasks.values()) == [[1, 1], [1, 2]], "messages carry ids only"
        wait_until(lambda: any(name.startswith("seen@") for name in get_json(f"{base}/api/workers?refresh=1")), 60, "the worker in Flower")
    finally:
        flower.terminate()
        flower.wait(timeout=20)
