"""Fixtures over real services: Postgres, Redis, SeaweedFS, Celery workers as subprocesses.

The only stand-in is the model: a tiny random-weight model of the reference architecture,
built here and loaded through Pisar's real loading code (no model hub is reachable).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.local_services import Service, ensure_postgres, ensure_redis, start_seaweedfs, throwaway_database, unconfigured_env
from pisar.random_model import build_random_model, read_texts
from tests.helpers.cli import PISAR
from tests.helpers.paths import SHARED_DATA, TEST_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``gpu`` test never runs without a CUDA device: it is skipped, saying so."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; torch sees none"))


@pytest.fixture(scope="session")
def print_lines() -> Path:
    """221 real print lines with their NAME.gt.txt, in the repository (tests/data/ATTRIBUTION.md)."""
    return TEST_DATA / "print-lines"


@pytest.fixture(scope="session")
def kraken_page() -> Path:
    """A real Transkribus page: its scan and PAGE 2013 file (tests/data/pages, from kraken's tests)."""
    return TEST_DATA / "pages"


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
def colour_lines(tmp_path_factory: pytest.TempPathFactory, print_lines: Path) -> Path:
    """Seven colour JPEGs (RGB) of real print lines, as a camera on yellowed paper gives them: the
    colour path of decoding and preprocessing, made at test time from the public-domain lines."""
    from tests.helpers.hostile import sepia_jpeg

    folder = tmp_path_factory.mktemp("colour-lines")
    for path in sorted(print_lines.glob("*.png"))[100:107]:
        (folder / path.name.replace(".bin.png", ".jpg")).write_bytes(sepia_jpeg(path))
    return folder


@pytest.fixture(scope="session")
def handwritten() -> Path:
    """Real handwritten lines (CC BY-NC-ND): only beside a development checkout, never in the repository."""
    folder = SHARED_DATA / "handwritten-samples"
    if not folder.is_dir():
        pytest.skip(f"no handwritten samples in {folder}: their licence forbids copying them (tests/data/ATTRIBUTION.md)")
    return folder


@pytest.fixture(params=["colour-print", "handwritten"])
def rgb_scans(request: pytest.FixtureRequest) -> Path:
    """Colour line JPEGs: the sepia print lines always; the real handwritten photos where they are."""
    return request.getfixturevalue("colour_lines" if request.param == "colour-print" else "handwritten")


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

    folder = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("model") / "empty"))
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


@pytest.fixture(scope="session")
def migrated_template(postgres_server: Service) -> Iterator[str]:
    """One database per test process, migrated once: each test's database is a copy of it."""
    with throwaway_database(postgres_server, "pisar_template") as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def postgres_url(postgres_server: Service, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database per test on the real server (a copy of the template), dropped afterwards."""
    with throwaway_database(postgres_server, template=migrated_template) as url:
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

    from pisar.queue import priority_lists, unacked_keys

    name = f"pisar-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_service.url)
    client.delete(*(key for _, key in priority_lists(name)), *unacked_keys(name).values())
    client.close()


@pytest.fixture
def distributed_env(redis_service: Service, postgres_url: str, seaweedfs: Service, queue_name: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `pisar` subprocesses in distributed mode."""
    env = unconfigured_env()
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
    env = unconfigured_env()
    env.update({"PISAR_CATALOG_PATH": str(tmp_path / "pisar.db"), "PISAR_TORCH_THREADS": "2"})
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Factory: start `pisar worker` subprocesses; all are stopped (warm, then hard) at teardown."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(env: dict[str, str], name: str, *args: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [PISAR, "worker", f"--hostname={name}@%h", *args],
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
