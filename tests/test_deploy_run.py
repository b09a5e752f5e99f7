"""compose.yaml's services, run outside containers: their own commands, environments and healthchecks.

No Docker engine runs here, so each service's command is run as compose resolved it
(`docker-compose config` with .env.example) on this machine: Redis and SeaweedFS from their compose
commands and credentials, then migrate, buckets, producer, feeder, worker, Flower and the metrics
exporter with their compose environments. The only rewrites are the addresses (service names and
fixed ports become free loopback ports) and the paths of mounted volumes. Postgres is the
machine's server with an empty database of its own (its image's entrypoint cannot run here).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, func, select

from infra.local_services import LOOPBACK, Service, free_port, port_open, start_seaweedfs, wait_for
from pisar.catalog.models import Shard
from pisar.settings import Settings
from tests.helpers.cli import PISAR, wait_until
from tests.helpers.deploy import PROFILES, env_file_values, resolved
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

SHARDS = Shard.__table__
LINES = 12


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return resolved(PROFILES)["services"]


@pytest.fixture(scope="module")
def compose_redis(services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """redis-server with compose's command (password, AOF, noeviction), on a free port and a temp dir."""
    command = services["redis"]["command"]
    port, workdir = free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", *command[1:], "--bind", LOOPBACK, "--port", str(port), "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open(port), "redis-server", 20, proc)
    service = Service(f"{LOOPBACK}:{port}", proc, grace_seconds=5)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def compose_seaweedfs(services: dict[str, dict[str, Any]]) -> Iterator[Service]:
    """SeaweedFS with compose's flags, its admin identity from compose's AWS_* environment."""
    env = services["seaweedfs"]["environment"]
    service = start_seaweedfs(
        options=services["seaweedfs"]["command"], credentials=(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def empty_database(postgres_server: Service) -> Iterator[str]:
    """A new, empty database: the `migrate` job creates the schema."""
    name = f"pisar_deploy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def outside(
    compose_redis: Service, compose_seaweedfs: Service, empty_database: str, tmp_path_factory: pytest.TempPathFactory
):  # returns a function
    """``outside(service)``: the service's compose environment, its addresses pointed at this machine."""
    models = tmp_path_factory.mktemp("models-volume")

    def rewrite(service: dict[str, Any], **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PISAR_", "AWS_", "HF_"))}
        env.update({k: "" if v is None else str(v) for k, v in service["environment"].items()})
        env["PISAR_REDIS_URL"] = env["PISAR_REDIS_URL"].replace("@redis:6379", f"@{compose_redis.url}")
        assert env["PISAR_DATABASE_URL"].startswith("postgresql://pisar:")  # compose's; this machine's trusts its own user
        env["PISAR_DATABASE_URL"] = empty_database
        assert env["PISAR_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        env["PISAR_S3_ENDPOINT_URL"] = compose_seaweedfs.url
        env["HF_HOME"] = env["HF_HOME"].replace("/models", str(models))
        env["PISAR_TORCH_THREADS"] = "1"  # two cores shared with the rest of the suite
        env.update(extra)
        return env

    return rewrite


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([PISAR, *command], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM, as `docker compose stop` sends; the exit code."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def here(command: list[str], rewrites: dict[str, str]) -> list[str]:
    """A command (or healthcheck) with the container's fixed ports and paths replaced by this machine's."""
    for old, new in rewrites.items():
        command = [part.replace(old, new) for part in command]
    return command


def healthcheck(service: dict[str, Any], rewrites: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the service's own healthcheck command (``CMD`` form) with this machine's Python."""
    kind, program, *args = here(service["healthcheck"]["test"], rewrites)
    assert kind == "CMD" and program == "python"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=30)


def test_redis_runs_from_its_compose_command_with_password_and_persistence(
    services: dict[str, dict[str, Any]], compose_redis: Service
) -> None:
    host, port = compose_redis.url.split(":")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=int(port)).ping()
    client = redis.Redis(host=host, port=int(port), password=env_file_values()["REDIS_PASSWORD"])
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("maxmemory") == {"maxmemory": str(1024**3)}
    kind, check = services["redis"]["healthcheck"]["test"]
    env = {**os.environ, **services["redis"]["environment"]}
    probe = subprocess.run(["sh", "-c", check.replace("redis-cli", f"redis-cli -p {port}")], env=env, timeout=30)
    assert kind == "CMD-SHELL" and probe.returncode == 0


def test_the_stack_transcribes_a_campaign_from_its_compose_commands(
    services: dict[str, dict[str, Any]],
    compose_seaweedfs: Service,
    outside,
    tiny_model: Path,
    print_lines: Path,
    tmp_path: Path,
) -> None:
    # seaweedfs: its healthcheck URL answers; `buckets` creates the bucket, and a rerun is harmless.
    health = [p for p in services["seaweedfs"]["healthcheck"]["test"] if p.startswith("http")][0]
    assert urllib.request.urlopen(health.replace("http://127.0.0.1:8333", compose_seaweedfs.url), timeout=10).status == 200
    buckets = services["buckets"]
    script = REPO / "infra" / "seaweedfs" / Path(buckets["entrypoint"][1]).name
    weed_env = {**os.environ, **buckets["environment"], "WEED": str(Path(sys.executable).with_name("weed"))}
    weed_env["WEED_MASTER"] = f"{LOOPBACK}:{compose_seaweedfs.ports['master']}"
    for expected in ("created", "already there"):
        made = subprocess.run(["sh", str(script)], env=weed_env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0 and f"bucket scans: {expected}" in made.stdout, made.stdout + made.stderr

    # migrate: the schema appears in the empty database.
    migrate = outside(services["migrate"])
    migrated = subprocess.run([PISAR, *services["migrate"]["command"]], env=migrate, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr

    # Scans land in the bucket with compose's S3 identity; the producer's one-shot submits them.
    s3 = compose_seaweedfs.s3_client()
    for path in sorted(print_lines.glob("*.png"))[:LINES]:
        s3.put_object(Bucket="scans", Key=f"fond-1/{path.name}", Body=path.read_bytes())
    producer = outside(services["producer"])
    assert subprocess.run([PISAR, *services["producer"]["command"]], env=producer, capture_output=True, timeout=120).returncode == 0
    submit = ["submit", "s3://scans/fond-1", "--name", "fond-1", "--model", str(tiny_model), "--shard-size", "4"]
    submitted = subprocess.run([PISAR, *submit], env=producer, capture_output=True, text=True, timeout=300)
    assert submitted.returncode == 0, submitted.stderr

    # feeder, metrics, Flower and a worker, each from its compose command.
    metrics_port, flower_port, worker_port = free_port(), free_port(), free_port()
    metrics_env, flower_env = outside(services["metrics"]), outside(services["flower"])
    worker_env = outside(services["worker"], PISAR_METRICS_PORT=str(worker_port))
    rewrites = {
        "feeder": {"/tmp/pisar-feed.alive": str(tmp_path / "pisar-feed.alive")},
        "metrics": {"9809": str(metrics_port)},
        "flower": {"5555": str(flower_port)},
        "worker": {"9808": str(worker_port)},
    }
    envs = {"feeder": outside(services["feeder"]), "metrics": metrics_env, "flower": flower_env, "worker": worker_env}
    procs = {name: start(here(services[name]["command"], rewrites[name]), envs[name], tmp_path / f"{name}.log") for name in envs}
    try:
        catalog = create_engine(Settings(database_url=migrate["PISAR_DATABASE_URL"]).catalog_url)

        def states() -> dict[str, int]:
            with catalog.connect() as conn:
                return dict(conn.execute(select(SHARDS.c.state, func.count()).group_by(SHARDS.c.state)).all())

        wait_until(lambda: states() == {"done": LINES // 4}, 240, "the campaign to finish")
        catalog.dispose()
        for name in envs:  # the feeder's: it touched its heartbeat file; the rest: their HTTP endpoints
            check = partial(healthcheck, services[name], rewrites[name], envs[name])
            wait_until(lambda check=check: check().returncode == 0, 60, f"{name}'s healthcheck")
        scraped = urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=10).read().decode()
        assert f'pisar_campaign_lines{{campaign="fond-1",status="ok"}} {LINES}.0' in scraped
        assert "pisar_broker_up 1.0" in scraped  # it reached the password-protected Redis
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{LOOPBACK}:{flower_port}/", timeout=10)
        assert refused.value.code == 401
        login = base64.b64encode(flower_env["PISAR_FLOWER_BASIC_AUTH"].encode()).decode()
        page = urllib.request.Request(f"http://{LOOPBACK}:{flower_port}/workers", headers={"Authorization": f"Basic {login}"})
        wait_until(lambda: b"pisar-gpu0@" in urllib.request.urlopen(page, timeout=10).read(), 60, "Flower to list the worker")
        status = subprocess.run([PISAR, "status", "fond-1"], env=producer, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and f"{LINES}" in status.stdout, status.stdout + status.stderr
    finally:
        codes = {name: stop(proc) for name, proc in procs.items()}
        for name in procs:
            print(f"--- {name} ---\n" + (tmp_path / f"{name}.log").read_text()[-3000:])
    assert codes["worker"] == 0 and codes["feeder"] == 0, codes  # warm shutdowns, within the stop timeout
    alive = rewrites["feeder"]["/tmp/pisar-feed.alive"]
    stale = os.path.getmtime(alive) - 200  # a loop that stopped touching its heartbeat is unhealthy
    os.utime(alive, (stale, stale))
    assert healthcheck(services["feeder"], rewrites["feeder"], envs["feeder"]).returncode == 1
