"""Prometheus metrics from a real worker and from `pisar metrics`, and a Grafana dashboard that only names metrics that exist."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.local_services import free_port
from tests.helpers.cli import PISAR, run_pisar, wait_until
from tests.helpers.paths import REPO
from tests.helpers.s3 import upload

pytestmark = pytest.mark.slow

DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "pisar.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """``/metrics`` as {family: {sorted label items + sample name: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return families


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    key = (sample or family, *sorted(labels.items()))
    return families[family].get(key, 0.0)


def scraped(port: int) -> dict:
    result: dict = {}

    def answered() -> bool:
        try:
            result.update(scrape(port))
        except OSError:
            return False
        return True

    wait_until(answered, 60, f"/metrics on port {port}")
    return result


def test_worker_and_catalog_metrics_and_the_dashboard(s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path) -> None:
    s3.create_bucket(Bucket="metered")
    upload(s3, "metered", {f"v/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:12]})
    upload(s3, "metered", {"v/broken.png": b"\x89PNG\r\n\x1a\n broken"})
    submitted = run_pisar(
        ["submit", "s3://metered/v", "--model", str(tiny_model), "--name", "metered", "--shard-size", "5"], distributed_env
    )
    assert submitted.returncode == 0, submitted.stderr

    exporter_port, worker_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [PISAR, "metrics", "--port", str(exporter_port), "--bind", "127.0.0.1"],
        env=distributed_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        before = scraped(exporter_port)
        queue = distributed_env["PISAR_QUEUE"]
        assert value(before, "pisar_queue_depth", queue=queue) == 3, "3 shards published, no worker yet"
        assert value(before, "pisar_campaign_lines", campaign="metered", status="pending") == 13
        assert value(before, "pisar_campaign_shards", campaign="metered", state="queued") == 3
        assert value(before, "pisar_broker_up") == 1

        start_worker({**distributed_env, "PISAR_METRICS_PORT": str(worker_port)}, "metered")
        wait_until(
            lambda: value(scrape(exporter_port), "pisar_campaign_shards", campaign="metered", state="done") == 3, 300, "3 shards done"
        )
        after = scrape(exporter_port)
        worker = scraped(worker_port)
    finally:
        os.killpg(exporter.pid, signal.SIGTERM)
        exporter.wait(timeout=30)

    assert value(after, "pisar_queue_depth", queue=queue) == 0
    assert value(after, "pisar_campaign_lines", campaign="metered", status="ok") == 12
    assert value(after, "pisar_campaign_lines", campaign="metered", status="error") == 1

    assert value(worker, "pisar_lines", "pisar_lines_total", campaign="metered", status="ok", error_class="") == 12
    assert value(worker, "pisar_lines", "pisar_lines_total", campaign="metered", status="error", error_class="NotAnImage") == 1
    assert value(worker, "pisar_shards", "pisar_shards_total", outcome="done") == 3
    for stage in ("fetch", "preprocess", "generate", "commit"):
        assert value(worker, "pisar_stage_seconds", "pisar_stage_seconds_total", stage=stage) > 0, stage
    assert value(worker, "pisar_batch_lines", "pisar_batch_lines_sum") == 12, "every readable line went through a batch"
    tokens = value(worker, "pisar_generated_tokens", "pisar_generated_tokens_total")
    assert 0 < tokens <= value(worker, "pisar_decoder_row_steps", "pisar_decoder_row_steps_total")
    assert "pisar_gpu_memory_bytes" in worker, "declared even on a CPU, so the dashboard's query resolves"

    exposed = set(after) | set(worker)
    named = set(re.findall(r"\bpisar_[a-z_]+", json.dumps(json.loads(DASHBOARD.read_text())["panels"])))
    assert named, "the dashboard queries Pisar's metrics"
    missing = {n for n in named if n not in exposed and not any(n.endswith(s) and n.removesuffix(s) in exposed for s in SUFFIXES)}
    assert not missing, f"the dashboard names metrics nobody exports: {sorted(missing)}"


def test_metrics_refuses_a_busy_port_in_one_line(distributed_env) -> None:
    port = free_port()
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        done = run_pisar(["metrics", "--port", str(port), "--bind", "127.0.0.1"], distributed_env, timeout=60)
    assert done.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
