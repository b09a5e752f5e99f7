"""Prometheus metrics of one worker process: what it read, where its time went, how hard the GPU worked.

A worker runs one Celery child (one per GPU), and that child serves ``/metrics`` on
``PISAR_METRICS_PORT`` (0 turns it off). Counters restart with the child; Prometheus' ``rate``
handles that. The catalog-wide view (queue depth, shards per state) is ``pisar metrics``
(``producer/metrics.py``). ``infra/grafana/dashboards/pisar.json`` charts both.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LINES = Counter("pisar_lines", "Lines finished by this worker", ["campaign", "status", "error_class"])
STAGE_SECONDS = Counter(
    "pisar_stage_seconds",
    "Seconds per stage: fetch and preprocess are summed over the fetch threads; "
    "input_wait, generate and commit are wall time of the thread that drives the model",
    ["stage"],
)
BATCH_LINES = Histogram("pisar_batch_lines", "Lines per generate call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
GENERATED_TOKENS = Counter("pisar_generated_tokens", "Tokens generated, each line up to its end token")
DECODER_ROW_STEPS = Counter("pisar_decoder_row_steps", "Decoder row-steps paid for, rows that had already ended included")
SHARDS = Counter("pisar_shards", "Shard deliveries by outcome", ["outcome"])
GPU_MEMORY = Gauge("pisar_gpu_memory_bytes", "CUDA memory of this worker after its last shard", ["kind"])
STAGES = ("fetch", "preprocess", "input_wait", "generate", "commit")


def serve(port: int, bind: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``bind:port`` in a daemon thread; a busy port is logged, never fatal."""
    if not port:
        return
    for stage in STAGES:  # every stage shows from the first scrape, at 0
        STAGE_SECONDS.labels(stage)
    try:
        start_http_server(port, addr=bind)
    except OSError as exc:
        log.warning("metrics: cannot serve on port %s (%s); this worker runs without /metrics", port, exc)
        return
    log.info("metrics on %s:%s/metrics", bind, port)


def record_lines(campaign: str, results: Iterable[tuple[str, str | None]]) -> None:
    """Count finished lines by ``(status, error_class)``."""
    for status, error_class in results:
        LINES.labels(campaign, status, error_class or "").inc()


def record_gpu_memory() -> None:
    """Allocated, reserved and peak CUDA bytes, when this process uses CUDA (a process without torch loaded does not)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    GPU_MEMORY.labels("allocated").set(torch.cuda.memory_allocated())
    GPU_MEMORY.labels("reserved").set(torch.cuda.memory_reserved())
    GPU_MEMORY.labels("peak").set(torch.cuda.max_memory_allocated())
