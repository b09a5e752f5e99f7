"""`pisar submit --manifest`: a campaign's keys from a file instead of a listing, counted the way a listing counts them."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy

from pisar.errors import ConfigError
from pisar.producer.manifest import OUTSIDE, REPEATED, read_manifest
from pisar.storage import UNSTORABLE_KEY
from tests.helpers.cli import run_pisar, wait_until
from tests.helpers.s3 import upload

pytestmark = pytest.mark.slow

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
) -> None:
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


# An S3 Inventory of bucket "inv-source": what a current object's key looks like in each format, and the
# rows a versioned inventory adds (an older version, a delete marker) that must not become lines.
INVENTORY = [  # key, is_latest, is_delete_marker
    ("v/a b.png", True, False),
    ("v/C++ лист.png", True, False),
    ("v/old.png", False, False),
    ("v/deleted.png", True, True),
    ("v/notes.gt.txt", True, False),
    ("w/elsewhere.png", True, False),
    ("v/d.PNG", True, False),
]


def put_inventory(s3, kind: str, corrupt: bool = False) -> str:  # boto3 client
    """Write an inventory report the way S3 does (two data files and a manifest.json); its s3:// URL."""
    from urllib.parse import quote_plus

    for bucket in ("inv-source", "inventory-dest"):
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
    base = f"inv/inv-source/daily/{kind}"
    files = []
    for number, rows in enumerate((INVENTORY[:4], INVENTORY[4:])):
        if kind == "CSV":  # headerless, gzipped, keys URL-encoded with + for a space
            body = "".join(
                f'"inv-source","{quote_plus(k)}","vid","{str(latest).lower()}","{str(marker).lower()}"\n' for k, latest, marker in rows
            )
            data, name = gzip.compress(body.encode()), f"{number}.csv.gz"
        else:
            import io

            table = pa.table(
                {
                    "bucket": ["inv-source"] * len(rows),
                    "key": [k for k, _, _ in rows],
                    "is_latest": [latest for _, latest, _ in rows],
                    "is_delete_marker": [marker for _, _, marker in rows],
                }
            )
            buffer = io.BytesIO()
            if kind == "PARQUET":
                pq.write_table(table, buffer)
            else:
                import pyarrow.orc as orc

                orc.write_table(table, buffer)
            data, name = buffer.getvalue(), f"{number}.{kind.lower()}"
        s3.put_object(Bucket="inventory-dest", Key=f"{base}/data/{name}", Body=data)
        checksum = hashlib.md5(b"tampered" if corrupt else data).hexdigest()  # S3's own checksum
        files.append({"key": f"{base}/data/{name}", "size": len(data), "MD5checksum": checksum})
    manifest = {
        "sourceBucket": "inv-source",
        "destinationBucket": "arn:aws:s3:::inventory-dest",
        "version": "2016-11-30",
        "fileFormat": kind if kind != "PARQUET" else "Parquet",
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker" if kind == "CSV" else "message s3.inventory { }",
        "files": files,
    }
    s3.put_object(Bucket="inventory-dest", Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://inventory-dest/{base}/manifest.json"


@pytest.mark.parametrize("kind", ["CSV", "PARQUET", "ORC"])
def test_an_s3_inventory_gives_the_current_objects_keys(kind: str, s3, s3_env, seaweedfs) -> None:
    from pisar.s3_storage import S3Storage
    from pisar.settings import Settings

    storage = S3Storage("inv-source", "v/", Settings(s3_endpoint_url=seaweedfs.url))
    listing = read_manifest(put_inventory(s3, kind), "v/", storage)
    assert listing.keys == ["v/C++ лист.png", "v/a b.png", "v/d.PNG"]  # '+' and ' ' decoded apart; no old version, no delete marker
    assert dict(listing.skipped) == {".gt.txt": 1, OUTSIDE: 1}


def test_a_damaged_or_foreign_inventory_is_refused(s3, s3_env, seaweedfs, tmp_path: Path) -> None:
    from pisar.s3_storage import S3Storage
    from pisar.settings import Settings
    from pisar.storage import LocalStorage

    settings = Settings(s3_endpoint_url=seaweedfs.url)
    url = put_inventory(s3, "CSV", corrupt=True)
    with pytest.raises(ConfigError, match="does not match its MD5"):
        read_manifest(url, "v/", S3Storage("inv-source", "v/", settings))
    with pytest.raises(ConfigError, match="is of bucket 'inv-source', not of the source's 'other'"):
        read_manifest(url, "", S3Storage("other", "", settings))
    with pytest.raises(ConfigError, match="needs an s3:// source"):
        read_manifest(url, "", LocalStorage(tmp_path))


def test_a_page_campaign_takes_the_manifests_layout_files_and_reads_each_once(tmp_path: Path, tiny_model: Path) -> None:
    """`--layout xml --manifest`: the manifest names PAGE/ALTO files; each listed one becomes its TextLines,
    a scan named in it is skipped as a listing would skip it, and a layout not named is never read."""
    from pisar.catalog.models import Line
    from pisar.producer.submit import SubmitRequest, continue_listing, create_campaign
    from pisar.settings import Settings
    from tests.helpers.pages import page_xml, rectangle

    source = tmp_path / "pages"
    source.mkdir()
    for name, count in (("p1", 3), ("p2", 2), ("p3", 4)):
        lines = [(f"l{n}", rectangle(10, 10 + 60 * n, 300, 40)) for n in range(count)]
        (source / f"{name}.xml").write_bytes(page_xml(f"{name}.png", (400, 400), lines))
        (source / f"{name}.png").write_bytes(b"not read at listing")
    manifest = tmp_path / "pages.txt"
    manifest.write_text("p1.xml\np2.xml\np2.png\np1.xml\n", encoding="utf-8")  # p3 left out; a scan; a repeat
    settings = Settings(catalog_path=str(tmp_path / "c.db"))
    from pisar.catalog.db import ensure_ready

    ensure_ready(settings.catalog_url, auto_upgrade=True)
    request = SubmitRequest(str(source), str(tiny_model), "paged", 256, "q", manifest=str(manifest), layout="xml")
    campaign, listed = create_campaign(settings, request)
    assert (campaign.line_count, campaign.shard_count) == (5, 1)
    assert dict(listed.skipped) == {".png": 1, REPEATED: 1}
    with sqlalchemy.create_engine(settings.catalog_url).connect() as conn:
        keys = sorted(conn.execute(sqlalchemy.select(Line.__table__.c.key)).scalars())
    assert keys == ["p1.xml#l0", "p1.xml#l1", "p1.xml#l2", "p2.xml#l0", "p2.xml#l1"]
    assert continue_listing(settings, campaign).keys == 5  # a resume goes through the manifest again, adding nothing
