"""Long-running services and the schema: `pisar worker`, `feed`, `metrics`, `flower` and `db upgrade`."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from pisar.cli.app import app, catalog, db_app, err, examples
from pisar.errors import ConfigError, FatalError
from pisar.interrupt import stop_requested
from pisar.settings import get_settings


@db_app.command("upgrade", epilog=examples("pisar db upgrade"))
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply Alembic migrations to the catalog."""
    from pisar.catalog.db import upgrade

    settings = get_settings()
    now = upgrade(settings.catalog_url, revision)
    err.print(f"catalog at revision {now}")


@app.command(
    epilog=examples(
        "pisar worker --model models/mine",
        "CUDA_VISIBLE_DEVICES=1 pisar worker --queue urgent",
        "pisar worker --queues detect          # a CPU node that only detects lines",
        "pisar worker --queues read,detect     # a GPU node that does both",
    )
)
def worker(
    queue: Annotated[Optional[str], typer.Option(help="Queue to consume (default PISAR_QUEUE)")] = None,
    queues: Annotated[
        str,
        typer.Option(
            "--queues", help="What to take: read (shards of lines), detect (scans to find lines in, on QUEUE.detect), or read,detect"
        ),
    ] = "read",
    hostname: Annotated[Optional[str], typer.Option(help="Celery node name (default pisar-<gpu or pid>@host)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Preload this model at start (default PISAR_MODEL)")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "INFO",
) -> None:
    """Start one Celery worker process (run one per GPU, e.g. with CUDA_VISIBLE_DEVICES).

    It exits non-zero when it cannot serve: at start with a preload model it cannot serve here, or
    after giving back the shard whose model would not load (no device, a broken model folder).
    """
    from pisar.queue import configure, delivery_problems, detect_queue, require_redis
    from pisar.worker.preflight import check_node

    roles = {role.strip() for role in queues.split(",") if role.strip()}
    if not roles or roles - {"read", "detect"}:
        raise ConfigError(f"--queues takes read, detect or read,detect, not {queues!r}")
    if "detect" in roles:
        from pisar.detect import check_available

        check_available(get_settings().detector)  # one line naming what to install, before any message is taken
    if model:
        os.environ["PISAR_MODEL"] = model  # the forked child reads it in worker_process_init
        get_settings.cache_clear()
    settings = get_settings()
    if "read" not in roles and settings.model:  # a detect-only node reads nothing: no model to preload
        os.environ.pop("PISAR_MODEL", None)
        get_settings.cache_clear()
        settings = get_settings()
    check_node(settings)  # with a preload model: the device and the model's files, before any message is taken
    require_redis(settings)
    catalog(settings)
    celery_app = configure(settings)
    import pisar.worker.tasks  # noqa: F401 - registers run_shard
    from pisar.worker import stopping
    from pisar.worker.serving import this_node

    problems = delivery_problems(celery_app.conf, settings)
    if problems:
        raise ConfigError("refusing to start, settings would lose or duplicate work: " + "; ".join(problems))
    stopping.install_parent()  # SIGTERM: finish the shard within PISAR_STOP_TIMEOUT_SECONDS or give it back
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    node = hostname or f"pisar-{'gpu' + gpu.replace(',', '_') if gpu else os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--pool=prefork",
            "--concurrency=1",
            "--queues="
            + ",".join(
                name
                for role, name in (("read", queue or settings.queue), ("detect", detect_queue(queue or settings.queue)))
                if role in roles
            ),
            f"--hostname={node}",
            "--events",
            "--without-mingle",
        ]
    )
    if not this_node.serving:
        raise FatalError("this worker stopped taking work: it cannot serve (the reason is logged above); its shard was given back")


@app.command(epilog=examples("pisar feed", "pisar feed --once"))
def feed(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (for cron or a test)")] = False,
    heartbeat: Annotated[
        Optional[Path], typer.Option(help="Touch this file after every pass, for a container healthcheck (see compose.yaml)")
    ] = None,
) -> None:
    """The producer's loop: top queues up from pending shards (back-pressure) and put dead workers' shards back in line.

    Every PISAR_FEED_INTERVAL_SECONDS it publishes pending shards, most urgent campaign first, while
    fewer than PISAR_QUEUE_LOW_WATER wait in Redis (up to PISAR_QUEUE_HIGH_WATER); every
    PISAR_REAP_INTERVAL_SECONDS it returns shards of dead workers (expired leases) to pending,
    or quarantines them after max attempts. One per deployment is enough; a second is harmless.
    """
    from pisar.producer.feed_loop import feed_forever
    from pisar.queue import require_redis

    settings = get_settings()
    catalog(settings)
    if not settings.distributed:
        raise ConfigError("pisar feed needs a broker (PISAR_REDIS_URL); in embedded mode rerun `pisar run`, which reclaims expired shards")
    require_redis(settings)
    with stop_requested() as stop:  # SIGTERM (docker stop) or Ctrl-C: finish the pass, then exit 0
        feed_forever(settings, stop, lambda line: err.print(line, markup=False), once=once, heartbeat=heartbeat)


@app.command(epilog=examples("pisar metrics --port 9809", "pisar metrics --bind 0.0.0.0"))
def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of /metrics")] = 9809,
    bind: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface, as in a container)")] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics of the queues and the catalog: queue depth, shards and lines per campaign."""
    from prometheus_client import REGISTRY, start_http_server

    from pisar.producer.metrics import CatalogCollector

    settings = get_settings()
    catalog(settings)
    REGISTRY.register(CatalogCollector(settings))
    try:
        start_http_server(port, addr=bind)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    err.print(f"pisar metrics on http://{bind}:{port}/metrics")
    with stop_requested() as stop:  # SIGTERM (docker stop) or Ctrl-C: exit 0
        stop.wait()


@app.command(epilog=examples("PISAR_FLOWER_BASIC_AUTH=archivist:secret pisar flower", "pisar flower --address 0.0.0.0 --port 5555"))
def flower(
    port: Annotated[int, typer.Option(help="HTTP port")] = 5555,
    address: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve Flower without a password (a trusted network only)")] = False,
) -> None:
    """Start Flower on Pisar's Celery app (live workers and tasks), behind basic auth (PISAR_FLOWER_BASIC_AUTH)."""
    from pisar.flower_auth import configure_auth
    from pisar.queue import configure, require_redis

    settings = get_settings()
    credentials = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    guard = configure_auth(credentials, no_auth)
    require_redis(settings)
    err.print(f"Flower on http://{address}:{port} with {guard}", markup=False)
    configure(settings).start(["flower", f"--port={port}", f"--address={address}"])
