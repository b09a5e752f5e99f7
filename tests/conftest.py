"""Fixtures over real services: Postgres, Redis, SeaweedFS, Celery workers as subprocesses.

The only stand-in is the model: a tiny random-weight model of the reference architecture,
built here and loaded through Pisar's real loading code (no model hub is reachable).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from infra.local_services import Service, ensure_postgres, ensure_redis, start_seaweedfs, throwaway_database
from pisar.random_model import build_random_model, read_texts

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PISAR = str(Path(sys.executable).with_name("pisar"))


def shared(folder: str) -> Path:
    """A folder of ../shared/data; the suite needs the real scans, so its absence is an error."""
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.fail(f"real line images are expected in {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def print_lines() -> Path:
    return shared("print-lines")


@pytest.fixture(scope="session")
def gt_pairs(tmp_path_factory: pytest.TempPathFactory, print_lines: Path) -> Path:
    """24 real line images with their NAME.gt.txt, 4 of them in the hash-held-out split at share 0.2.

    The shipped samples are all held out (they show the demo model on unseen lines), so training
    tests need a folder with lines on both sides of the split.
    """
    folder = tmp_path_factory.mktemp("gt-pairs")
    for image in sorted(print_lines.glob("*.png"))[:24]:
        shutil.copy(image, folder)
        shutil.copy(image.with_name(image.name.replace(".bin.png", ".gt.txt")), folder)
    return folder


@pytest.fixture(scope="session")
def handwritten() -> Path:
    return shared("handwritten-samples")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, print_lines: Path) -> Path:
    """A random DINOv2 + TrOCR model saved with save_pretrained, tokenizer trained on the shared texts."""
    return build_random_model(tmp_path_factory.mktemp("model") / "tiny", read_texts([print_lines]))


@pytest.fixture(scope="session")
def byte_model(tmp_path_factory: pytest.TempPathFactory, print_lines: Path) -> Path:
    """The same architecture over a byte-level BPE vocabulary, as TrOCR decoders have: its noise holds
    NUL, ESC and other control bytes, and invalid UTF-8 (decoded as U+FFFD)."""
    return build_random_model(tmp_path_factory.mktemp("model") / "bytes", read_texts([print_lines]), preset="test-bytes")


@pytest.fixture(scope="session")
def empty_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model told to end every line at once: each reading is empty (its end token forced at the first step)."""
    import json

    folder = copy_tree(tiny_model, tmp_path_factory.mktemp("model") / "empty")
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(max_new_tokens=1, min_new_tokens=0, forced_eos_token_id=config["eos_token_id"])
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service]:
    service = ensure_redis()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Service]:
    service = ensure_postgres()
    yield service
    service.stop()


def fresh_database(postgres_server: Service) -> AbstractContextManager[str]:
    """A new, migrated database on the real server, dropped on exit."""
    return throwaway_database(postgres_server)


@pytest.fixture
def postgres_url(postgres_server: Service) -> Iterator[str]:
    """A fresh, migrated database per test on the real server, dropped afterwards."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield service
    service.stop()


@pytest.fixture
def s3_env(seaweedfs: Service, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials and endpoint in this process's environment, the way boto3 reads them."""
    for key, value in seaweedfs.env.items():
        monkeypatch.setenv(key, value)
    return seaweedfs.env


@pytest.fixture
def s3(seaweedfs: Service, s3_env: dict[str, str]):  # boto3 client
    return seaweedfs.s3_client()


@pytest.fixture
def queue_name(redis_service: Service) -> Iterator[str]:
    """A queue of its own per test, deleted afterwards, so tests never see each other's messages."""
    import redis

    from pisar.queue import priority_lists

    name = f"pisar-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_service.url)
    client.delete(*(key for _, key in priority_lists(name)))
    client.close()


@pytest.fixture
def distributed_env(redis_service: Service, postgres_url: str, seaweedfs: Service, queue_name: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `pisar` subprocesses in distributed mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PISAR_", "AWS_"))}
    env.update(seaweedfs.env)
    env.update(
        {
            "PISAR_REDIS_URL": redis_service.url,
            "PISAR_DATABASE_URL": postgres_url,
            "PISAR_QUEUE": queue_name,
            "PISAR_TORCH_THREADS": "1",
            "PISAR_FETCH_THREADS": "4",
            "PISAR_BATCH_SIZE": "16",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `pisar` subprocesses with nothing configured but the SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PISAR_", "AWS_"))}
    env.update({"PISAR_CATALOG_PATH": str(tmp_path / "pisar.db"), "PISAR_TORCH_THREADS": "2"})
    return env


def run_pisar(args: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `pisar` console script, as a user would."""
    return subprocess.run([PISAR, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Factory: start `pisar worker` subprocesses; all are stopped (warm, then hard) at teardown."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(env: dict[str, str], name: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [PISAR, "worker", f"--hostname={name}@%h"],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append((proc, log))
        return proc

    yield start
    for proc, _log in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc, log in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"--- {log.name} (exit {proc.returncode}) ---\n{log.read_text()[-4000:]}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
