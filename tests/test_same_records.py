"""`pisar run` (SQLite, in-process) and a distributed campaign (Postgres, a Celery worker) store the
same records for the same lines, with a byte-level model whose texts hold NUL and control bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pisar.constants import EXPORT_FIELDS
from tests.helpers.cli import run_pisar, wait_until
from tests.helpers.s3 import upload

pytestmark = pytest.mark.slow

LINES = 32
SHARD_SIZE = 16
# Everything but where and when it ran; the floats too: the same batches on the same torch threads sum alike.
SAME_EVERYWHERE = tuple(f for f in EXPORT_FIELDS if f not in ("shard", "worker", "finished_at"))


def records(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def test_embedded_and_distributed_runs_store_the_same_records(
    s3,
    seaweedfs,
    distributed_env: dict[str, str],
    embedded_env: dict[str, str],
    start_worker,
    byte_model: Path,
    print_lines: Path,
    tmp_path: Path,
) -> None:
    s3.create_bucket(Bucket="modes")
    upload(s3, "modes", {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:LINES]})
    source = "s3://modes/vol"
    common = ["--model", str(byte_model), "--name", "same", "--shard-size", str(SHARD_SIZE)]

    embedded = tmp_path / "embedded.jsonl"
    alike = {"PISAR_BATCH_SIZE": "16", "PISAR_TORCH_THREADS": "1"}  # as distributed_env runs its workers
    ran = run_pisar(["run", source, *common, "-o", str(embedded)], {**embedded_env, **seaweedfs.env, **alike})
    assert ran.returncode == 0, ran.stderr

    submitted = run_pisar(["submit", source, *common], distributed_env)
    assert submitted.returncode == 0, submitted.stderr
    start_worker(distributed_env, "same")

    def finished() -> bool:
        report = json.loads(run_pisar(["status", "same", "--json"], distributed_env).stdout)
        return report["lines"]["pending"] == 0

    wait_until(finished, 180, "the distributed campaign to finish")
    distributed = tmp_path / "distributed.jsonl"
    exported = run_pisar(["export", "same", "-o", str(distributed)], distributed_env)
    assert exported.returncode == 0, exported.stderr

    here, there = records(embedded), records(distributed)
    assert len(here) == len(there) == LINES
    for key, record in here.items():
        assert {f: record[f] for f in SAME_EVERYWHERE} == {f: there[key][f] for f in SAME_EVERYWHERE}, key
    # The model really wrote what Postgres refuses and what it takes as it is.
    unstorable = [r for r in here.values() if "unstorable_text" in (r["flags"] or "")]
    assert unstorable and all("\x00" not in r["text"] and "\ufffd" in r["text"] for r in unstorable)
    assert any("\x1b" in r["text"] for r in here.values())  # ESC is storable: kept exactly
    assert all(r["status"] == "ok" for r in here.values())
