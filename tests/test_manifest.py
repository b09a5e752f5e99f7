"""`pisar submit --manifest`: a campaign's keys from a file instead of a listing, counted the way a listing counts them."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pisar.errors import ConfigError
from pisar.producer.manifest import OUTSIDE, REPEATED, read_manifest
from pisar.storage import UNSTORABLE_KEY
from tests.conftest import run_pisar, wait_until
from tests.test_end_to_end import upload

KEYS = ["v/a b.png", "v/лист 1/c.jpg", "v/a b.png", "v/notes.gt.txt", "w/elsewhere.png", "v/d.PNG"]


def expected_skips() -> dict[str, int]:
    return {REPEATED: 1, ".gt.txt": 1, OUTSIDE: 1}


@pytest.mark.parametrize("kind", ["txt", "txt.gz", "csv", "csv.gz", "parquet"])
def test_every_manifest_format_gives_the_same_listing(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"manifest.{kind}"
    if kind.startswith("txt"):
        body = "\r\n".join(KEYS[:3]) + "\n\n" + "\n".join(KEYS[3:]) + "\n"  # CRLF, a blank line, LF
        path.write_bytes(gzip.compress(body.encode()) if kind.endswith(".gz") else body.encode())
    elif kind.startswith("csv"):
        rows = [{"bucket": "b", "key": k, "size": "1"} for k in KEYS]
        opener = gzip.open if kind.endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["bucket", "key", "size"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.table({"key": KEYS, "size": [1] * len(KEYS)}), path)
    listing = read_manifest(path, prefix="v/")
    assert listing.keys == ["v/a b.png", "v/d.PNG", "v/лист 1/c.jpg"]
    assert dict(listing.skipped) == expected_skips()


def test_a_key_that_is_not_utf8_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_bytes(b"v/ok.png\nv/\xff\xfe.png\nv/nul\x00.png\n")
    listing = read_manifest(path, prefix="v/")
    assert listing.keys == ["v/ok.png"] and listing.skipped[UNSTORABLE_KEY] == 2


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [("m.json", b"[]", "use a .txt, .lst, .csv"), ("m.csv", b"bucket,name\nb,x.png\n", "no `key` column")],
)
def test_a_bad_manifest_is_named(name: str, body: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(ConfigError, match=message):
        read_manifest(path)


def test_submit_from_a_manifest_reads_exactly_its_keys(
    s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    s3.create_bucket(Bucket="listed")
    lines = sorted(print_lines.glob("*.png"))[:6]
    upload(s3, "listed", {f"v/{p.name}": p.read_bytes() for p in lines})
    manifest = tmp_path / "keys.txt"
    wanted = [f"v/{p.name}" for p in lines[:4]] + ["v/gone.png", "other/x.png"]
    manifest.write_text("\n".join(wanted) + "\n", encoding="utf-8")
    submitted = run_pisar(
        ["submit", "s3://listed/v", "--model", str(tiny_model), "--name", "listed", "--manifest", str(manifest)], distributed_env
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "5 lines in 1 shards" in submitted.stderr and "1 (outside the source)" in submitted.stderr

    start_worker(distributed_env, "manifest")

    def finished() -> bool:
        report = json.loads(run_pisar(["status", "listed", "--json"], distributed_env).stdout)
        return report["lines"]["pending"] == 0

    wait_until(finished, 300, "the manifest's lines to be read")
    out = tmp_path / "r.jsonl"
    assert run_pisar(["export", "listed", "-o", str(out)], distributed_env).returncode == 0
    records = {r["key"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert sorted(records) == sorted(wanted[:5]), "the two objects not in the manifest were never read"
    assert records["v/gone.png"]["error_class"] == "MissingObject"
    assert all(records[k]["status"] == "ok" for k in wanted[:4])
