"""`--layout detect` end to end in one process, with a stored detection result (tests/helpers/stored_detector.py).

The real listing, catalog (``page`` rows, fenced commits, shards leaving ``detecting``), scan
decoding, line cutting by the detected polygons and reading; only the detector's network is
replaced, so this runs in seconds. blla itself: tests/test_detect_blla.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image
from sqlalchemy import create_engine, select

from pisar.catalog import pages
from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, LineHistory, Page, Shard
from pisar.detect.segmentation import DetectedLine, PageSegmentation
from pisar.layout import read_layout
from pisar.layout_schemas import schema
from pisar.settings import Settings
from tests.helpers.cli import PISAR, read_jsonl, run_pisar, wait_until
from tests.helpers.s3 import upload
from tests.helpers.stored_detector import CRASH_SIZE, DETECT_ENV, STORED


@pytest.fixture
def scans(tmp_path: Path, kraken_page: Path) -> Path:
    """The real scan twice, a blank page, a corrupt file, one the detector fails on, and a 3-page TIFF
    (the real scan, a blank page, the real scan): three read shards of two listed files each."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a-page.jpg", "b-page.jpg"):
        shutil.copy(kraken_page / "170025120000003,0074.jpg", folder / name)
    Image.new("L", (800, 1200), 255).save(folder / "c-blank.png")
    (folder / "d-corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("L", CRASH_SIZE, 128).save(folder / "e-crash.png")
    with Image.open(kraken_page / "170025120000003,0074.jpg") as real:
        page = real.convert("L").reduce(2)
    page.save(folder / "f-volume.tif", save_all=True, append_images=[Image.new("L", page.size, 255), page], compression="tiff_deflate")
    return folder


@pytest.mark.slow  # a whole campaign and five more commands, about 20 s
def test_a_folder_of_scans_is_detected_then_read_and_every_scan_has_its_outcome(
    scans: Path, embedded_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    env = {**embedded_env, **DETECT_ENV}
    out = tmp_path / "out.jsonl"
    result = run_pisar(["run", str(scans), "--layout", "detect", "--model", str(tiny_model), "-o", str(out)], env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "6 scans to detect in 3 shards" in result.stderr
    records = read_jsonl(out)
    by_key = {record["key"]: record for record in records}
    for scan in ("a-page.jpg", "b-page.jpg", "f-volume.tif", "f-volume.tif#p3"):  # the TIFF's first and third pages
        lines = [record for record in records if record["key"].startswith(f"{scan}#l")]
        assert len(lines) == 44  # the PAGE file's lines, keyed by the detector's ids in reading order
        assert all(record["status"] == "ok" and record["page"] == scan and record["image"] == scan for record in lines)
        assert sorted(record["reading_order"] for record in lines) == list(range(44))
    assert len(records) == 4 * 44 + 2
    assert by_key["d-corrupt.jpg#"]["status"] == "error" and by_key["d-corrupt.jpg#"]["error_class"] == "TruncatedImage"
    assert by_key["e-crash.png#"]["error_class"] == "DetectorCrash"
    assert not any(key.startswith("c-blank.png") for key in by_key)  # a scan with no line adds none...

    engine = create_engine(f"sqlite:///{embedded_env['PISAR_CATALOG_PATH']}")
    with engine.connect() as conn:
        states = dict(conn.execute(select(Page.__table__.c.key, Page.__table__.c.state)).all())
        flags = dict(conn.execute(select(Page.__table__.c.key, Page.__table__.c.flags)).all())
        attempts = dict(conn.execute(select(Page.__table__.c.key, Page.__table__.c.attempts)).all())
        shard_states = set(conn.execute(select(Shard.__table__.c.state)).scalars())
    assert states == {
        "a-page.jpg": "done",
        "b-page.jpg": "done",
        "c-blank.png": "done",
        "d-corrupt.jpg": "quarantined",
        "e-crash.png": "quarantined",
        "f-volume.tif": "done",
        "f-volume.tif#p2": "done",  # each page of the TIFF detected as its own scan
        "f-volume.tif#p3": "done",
    }
    assert flags["c-blank.png"] == flags["f-volume.tif#p2"] == pages.NO_LINES  # ...but is a recorded outcome with its flag
    assert attempts["d-corrupt.jpg"] == 1 and attempts["e-crash.png"] == 2  # a bad file is not retried; a detector failure is
    assert shard_states == {"done"}

    # `status` counts the scans and lists those that failed or held nothing.
    status = run_pisar(["status", "scans", "--json"], env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["scans"] == {"pending": 0, "queued": 0, "running": 0, "done": 6, "failed": 0, "quarantined": 2, "no_lines": 2}
    problems = {row["key"]: (row["state"], row["flags"], row["error_class"]) for row in report["scan_problems"]}
    assert problems == {
        "c-blank.png": ("done", "no_lines", None),
        "d-corrupt.jpg": ("quarantined", None, "TruncatedImage"),
        "e-crash.png": ("quarantined", None, "DetectorCrash"),
        "f-volume.tif#p2": ("done", "no_lines", None),
    }
    shown = run_pisar(["status", "scans"], env)
    assert "scans 8/8 detected: 2 without lines" in shown.stdout and "DetectorCrash" in shown.stdout, shown.stdout

    # The detected layout goes out as PAGE and ALTO, valid, with the readings in the detector's reading order.
    for fmt in ("page", "alto"):
        folder = tmp_path / fmt
        exported = run_pisar(["export", "scans", "--format", fmt, "-o", str(folder)], env)
        assert exported.returncode == 0, exported.stderr
        written = sorted(path.name for path in folder.rglob("*.xml"))
        assert written == ["a-page.xml", "b-page.xml", "f-volume.xml", "f-volume_p3.xml"], written  # no line, no record to write back
        for path in folder.rglob("*.xml"):
            document = etree.parse(str(path))
            assert schema(fmt).validate(document), (path, schema(fmt).error_log)
        layout = read_layout((folder / "a-page.xml").read_bytes())
        assert [line.line_id for line in layout.lines] == [f"l{n}" for n in range(1, 45)]
        assert all(line.baseline and len(line.polygon) >= 3 for line in layout.lines)
        words = [(line.text or "").split() for line in layout.lines]  # written as words: runs of spaces become one
        assert words == [by_key[f"a-page.jpg#l{n}"]["text"].split() for n in range(1, 45)]
        assert layout.image == "a-page.jpg"

    redetect_checks(env, tmp_path, by_key)


def retry_scans(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_pisar(["retry", "scans", *args], env, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def redetect_checks(env: dict[str, str], tmp_path: Path, before: dict[str, dict]) -> None:
    """`retry --scan ...` on the campaign the folder test ran: scans detected again, lines read again, earlier results kept."""
    everywhere, first_forty = "tests.helpers.stored_detector:Everywhere", "tests.helpers.stored_detector:FirstForty"
    dry = retry_scans(env, "--scans-without-lines", "--detector", everywhere, "--dry-run")
    assert "would detect again 2 scans in 2 shards" in dry.stderr and "nothing changed" in dry.stderr, dry.stderr
    retry_scans(env, "--scans-without-lines", "--detector", everywhere)
    retry_scans(env, "--scan", "a-page.jpg", "--detector", first_forty)
    out = tmp_path / "after.jsonl"
    assert run_pisar(["export", "scans", "-o", str(out)], env).returncode == 0
    after = {record["key"]: record for record in read_jsonl(out)}
    for scan in ("c-blank.png", "f-volume.tif#p2"):  # found this time, and read
        assert sum(1 for key in after if key.startswith(f"{scan}#l")) == 44
        assert all(after[f"{scan}#l{n}"]["status"] == "ok" for n in range(1, 45))
    assert all(after[f"a-page.jpg#l{n}"]["status"] == "ok" for n in range(1, 41))  # read again
    lost = [after[f"a-page.jpg#l{n}"] for n in range(41, 45)]
    assert {(r["status"], r["error_class"]) for r in lost} == {("error", "LineNotInLayout")}
    engine = create_engine(f"sqlite:///{env['PISAR_CATALOG_PATH']}")
    with engine.connect() as conn:
        kept = dict(
            conn.execute(
                select(Line.__table__.c.key, LineHistory.__table__.c.text).join(
                    LineHistory.__table__, LineHistory.__table__.c.line_id == Line.__table__.c.id
                )
            ).all()
        )
        detectors = dict(conn.execute(select(Page.__table__.c.key, Page.__table__.c.detector)).all())
    assert {key for key in kept} == {f"a-page.jpg#l{n}" for n in range(1, 45)}  # every earlier reading of the scan kept
    assert all(kept[key] == before[key]["text"] for key in kept)
    assert detectors["c-blank.png"].startswith("everywhere:") and detectors["a-page.jpg"].startswith("first-forty:")
    assert detectors["b-page.jpg"].startswith("stored:")


def test_a_scan_detected_twice_is_written_once(tmp_path: Path, embedded_env: dict[str, str], tiny_model: Path, scans: Path) -> None:
    """Two claims of one scan: the older run's commit is fenced off and writes nothing."""
    from pisar.catalog.db import ensure_ready
    from pisar.catalog.pages import PageFacts
    from pisar.detect.page_xml import page_xml
    from pisar.producer.submit import SubmitRequest, create_campaign
    from pisar.settings import Settings

    settings = Settings(catalog_path=tmp_path / "fenced.db", detector=STORED, detect_pages_per_shard=1)
    url = settings.catalog_url
    ensure_ready(url, auto_upgrade=True)
    create_campaign(settings, SubmitRequest(str(scans), str(tiny_model), "fenced", 256, "q", layout="detect"))
    page_id = pages.to_detect(url, 1)[0]
    first = pages.claim(url, page_id, "w1", lease_seconds=0, max_attempts=5)  # a lease that has already run out
    second = pages.claim(url, page_id, "w2", lease_seconds=60, max_attempts=5)
    assert first is not None and second is not None and second.token > first.token
    found = PageSegmentation(100, 100, (), (DetectedLine("l1", None, ((0, 0), (50, 0), (50, 20), (0, 20)), ((0, 18), (50, 18))),), "t")
    facts = PageFacts(page_xml(found, first.key).decode(), ["l1"], 100, 100, "t", 1.0)
    assert pages.finish(url, first, facts) is False
    assert pages.finish(url, second, facts) is True
    assert pages.finish(url, second, facts) is False  # done: a replay of the same commit changes nothing
    engine = create_engine(url)
    with engine.connect() as conn:
        shard = conn.execute(select(Shard.__table__).where(Shard.__table__.c.id == second.shard_id)).one()
    assert (shard.line_count, shard.state) == (1, "pending")


@pytest.mark.slow
def test_separate_detect_and_read_workers_give_the_embedded_run_s_records(
    scans: Path, s3, distributed_env: dict[str, str], embedded_env: dict[str, str], start_worker, tiny_model: Path, tmp_path: Path
) -> None:
    """A detect-only worker and a read-only worker (subprocesses), `pisar feed` between them, scans in
    SeaweedFS, the catalog in Postgres: the records equal those of `pisar run` on the same scans."""
    s3.create_bucket(Bucket="scans")
    upload(s3, "scans", {f"fond/{path.name}": path.read_bytes() for path in scans.iterdir()})
    env = {**distributed_env, **DETECT_ENV, "PISAR_FEED_INTERVAL_SECONDS": "1"}
    submitted = run_pisar(["submit", "s3://scans/fond", "--model", str(tiny_model), "--name", "fond", "--layout", "detect"], env)
    assert submitted.returncode == 0, submitted.stderr
    assert "6 scans in 3 shards" in submitted.stderr and "6 of 6 scans sent to detection" in submitted.stderr
    start_worker(env, "det", "--queues", "detect")
    start_worker(env, "read", "--queues", "read")
    feeder = subprocess.Popen([PISAR, "feed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    engine = get_engine(Settings(database_url=distributed_env["PISAR_DATABASE_URL"]).catalog_url)
    try:

        def shard_states() -> set[str]:
            with engine.connect() as conn:
                return set(conn.execute(select(Shard.__table__.c.state)).scalars())

        wait_until(lambda: shard_states() == {"done"}, 300, "every shard read")
    finally:
        feeder.terminate()
        feeder.wait(timeout=30)
    with engine.connect() as conn:
        page_workers = set(conn.execute(select(Page.__table__.c.worker)).scalars())
        shard_workers = set(conn.execute(select(Shard.__table__.c.worker)).scalars())
    assert {worker.split("@")[0] for worker in page_workers if worker} == {"det"}
    assert {worker.split("@")[0] for worker in shard_workers} == {"read"}
    exported = run_pisar(["export", "fond", "--format", "jsonl", "-o", str(tmp_path / "distributed.jsonl")], env)
    assert exported.returncode == 0, exported.stderr

    embedded = tmp_path / "embedded.jsonl"
    ran = run_pisar(
        ["run", str(scans), "--layout", "detect", "--model", str(tiny_model), "-o", str(embedded)], {**embedded_env, **DETECT_ENV}
    )
    assert ran.returncode == 0, ran.stderr
    fields = ("key", "status", "text", "error_class", "region_id", "reading_order")

    def essentials(path: Path, prefix: str = "") -> list[tuple]:
        return [tuple(record.get(f) for f in fields) for record in read_jsonl(path)]

    distributed_records = [(key.removeprefix("fond/"), *rest) for key, *rest in essentials(tmp_path / "distributed.jsonl")]
    assert distributed_records == essentials(embedded)
    assert len(distributed_records) == 4 * 44 + 2


@pytest.mark.slow  # a small campaign through `pisar resume`
def test_resume_detects_the_scans_an_interrupted_run_left_and_reads_their_lines(
    tmp_path: Path, embedded_env: dict[str, str], tiny_model: Path, kraken_page: Path
) -> None:
    from pisar.catalog.db import ensure_ready
    from pisar.producer.submit import SubmitRequest, create_campaign

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(kraken_page / "170025120000003,0074.jpg", folder / "page.jpg")
    env = {**embedded_env, **DETECT_ENV}
    settings = Settings(catalog_path=Path(env["PISAR_CATALOG_PATH"]), detector=STORED)
    ensure_ready(settings.catalog_url, auto_upgrade=True)
    create_campaign(settings, SubmitRequest(str(folder), str(tiny_model), "one", 256, "q", layout="detect"))  # listed, then "interrupted"
    resumed = run_pisar(["resume", "one"], env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    out = tmp_path / "one.jsonl"
    assert run_pisar(["export", "one", "-o", str(out)], env).returncode == 0
    records = read_jsonl(out)
    assert len(records) == 44 and {record["status"] for record in records} == {"ok"}
