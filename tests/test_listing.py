"""Listing a source into the catalog (`producer/listing.py`): key ranges by sub-folder, every key
exactly once, streamed page by page, and resumed after an interruption. Real SeaweedFS, real Postgres."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from pisar.catalog.models import Campaign, Line, Shard
from pisar.errors import ServiceUnavailable
from pisar.producer import listing as listing_module
from pisar.producer import submit as submit_module
from pisar.producer.listing import ListingBusy, list_into_catalog
from pisar.producer.submit import SubmitRequest, continue_listing, create_campaign
from pisar.s3_storage import S3Storage
from pisar.settings import Settings
from pisar.storage import KeyRange, LocalStorage
from tests.helpers.paths import DEMO_MODEL, lines_folder

# Folders two deep, objects beside folders, names that sort tightly ("f1/" vs "f1.png" vs "f10/").
IMAGES = (
    ["vol/cover.png", "vol/f1.png", "vol/f10/z.png", "vol/f2/o1/a b.png", "vol/f2/o1/лист 2.jpg"]
    + [f"vol/f1/o{o}/line_{i:03d}.png" for o in (1, 2) for i in range(40)]
    + [f"vol/f3/line_{i:03d}.png" for i in range(23)]
)
OTHERS = ["vol/readme.txt", "vol/f1/o1/line_000.gt.txt", "vol/f3/notes", "other/x.png"]


@pytest.fixture(scope="module")
def bucket(seaweedfs) -> str:
    s3 = seaweedfs.s3_client()
    s3.create_bucket(Bucket="ranges")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="ranges", Key=key, Body=b"x"), IMAGES + OTHERS))
    return "ranges"


def keys_of(storage: S3Storage, ranges: list[KeyRange]) -> list[str]:
    return [key for r in ranges for page in storage.list_range(r, None) for key in page]


def test_key_ranges_follow_the_folders_and_hold_every_key_once(bucket: str, seaweedfs, s3_env) -> None:
    storage = S3Storage(bucket, "vol/", Settings(s3_endpoint_url=seaweedfs.url), page_size=7)
    everything = sorted(k for k in IMAGES + OTHERS if k.startswith("vol/"))

    ranges = storage.key_ranges(wanted=6)  # two levels give six ranges
    assert ranges == [
        KeyRange("vol/", recursive=False),  # cover.png, f1.png, readme.txt beside the folders
        KeyRange("vol/f1/o1/"),
        KeyRange("vol/f1/o2/"),
        KeyRange("vol/f10/", recursive=False),
        KeyRange("vol/f2/o1/"),
        KeyRange("vol/f3/", recursive=False),
    ]
    assert sorted(keys_of(storage, ranges)) == everything and len(keys_of(storage, ranges)) == len(everything)
    deeper = storage.key_ranges(wanted=8)  # one level more: the leaf folders' own objects
    assert deeper == [KeyRange(r.prefix, recursive=False) for r in ranges]
    assert sorted(keys_of(storage, deeper)) == everything

    runs = storage.key_ranges(wanted=3)  # four folders for two ranges: two runs of them, beside the level's own objects
    assert runs == [
        KeyRange("vol/", recursive=False),
        KeyRange("vol/", folders=("vol/f1/", "vol/f10/")),
        KeyRange("vol/", folders=("vol/f2/", "vol/f3/")),
    ]
    assert sorted(keys_of(storage, runs)) == everything and len(keys_of(storage, runs)) == len(everything)
    rest = [k for page in storage.list_range(runs[1], "vol/f1/o2/line_038.png") for k in page]
    assert rest == ["vol/f1/o2/line_039.png", "vol/f10/z.png"]  # resumed inside the run's first folder, then its next
    assert storage.key_ranges(wanted=1) == [KeyRange("vol/")]  # no split wanted
    assert storage.key_ranges(wanted=8, flat_after=2) == [KeyRange("vol/")]  # too many objects of its own: listed whole
    resumed = [k for page in storage.list_range(KeyRange("vol/f1/o1/"), "vol/f1/o1/line_036.png") for k in page]
    assert resumed == [f"vol/f1/o1/line_{i:03d}.png" for i in range(37, 40)]


def test_local_keys_list_in_byte_order_so_a_listing_can_resume_after_any_key(tmp_path: Path) -> None:
    for name in ("a.png", "a/b.png", "a-b.png", "a0.png", "Z.png", "я.png", "a/c/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    storage = LocalStorage(tmp_path)
    listed = [k for page in storage.list_range(KeyRange(""), None, page_size=2) for k in page]
    assert listed == sorted(listed, key=lambda k: k.encode()) and len(listed) == 7
    assert [k for page in storage.list_range(KeyRange(""), "a/b.png") for k in page] == listed[listed.index("a/b.png") + 1 :]


class FailingStorage:
    """The real SeaweedFS storage, except one key range's third page raises the error an outage would."""

    def __init__(self, real: S3Storage, failing_prefix: str) -> None:
        self.real, self.failing_prefix, self.url, self.prefix = real, failing_prefix, real.url, real.prefix
        self.skipped_up_front = real.skipped_up_front

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        return self.real.key_ranges(wanted)

    def list_range(self, part: KeyRange, after: str | None):
        for number, page in enumerate(self.real.list_range(part, after)):
            if part.prefix == self.failing_prefix and number == 2:
                raise ServiceUnavailable("listing s3://ranges/vol/: connection reset (injected)")
            yield page


def test_an_interrupted_listing_resumes_with_nothing_lost_or_twice(
    bucket: str,
    seaweedfs,
    s3_env,
    postgres_url: str,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(database_url=postgres_url, s3_endpoint_url=seaweedfs.url, list_threads=3, feed_interval_seconds=0.2)
    monkeypatch.setattr(listing_module, "WRITE_KEYS", 6)  # write every shard as soon as it is full
    real_open = submit_module.open_storage
    monkeypatch.setattr(
        submit_module, "open_storage", lambda url, s: FailingStorage(S3Storage(bucket, "vol/", s, page_size=7), "vol/f1/o2/")
    )
    ticks = []
    request = SubmitRequest("s3://ranges/vol/", str(tiny_model), "interrupted", shard_size=6, queue="q")
    with pytest.raises(ServiceUnavailable, match="injected"):
        create_campaign(settings, request, tick=lambda: ticks.append(1))
    monkeypatch.setattr(submit_module, "open_storage", real_open)

    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        campaign = conn.execute(select(Campaign).where(Campaign.name == "interrupted")).one()
        written = conn.execute(text("SELECT count(*) FROM line WHERE campaign_id = :c"), {"c": campaign.id}).scalar_one()
        parts = conn.execute(
            text("SELECT prefix, done, after FROM listing_part WHERE campaign_id = :c ORDER BY ordinal"), {"c": campaign.id}
        )
        stopped = {prefix: (done, after) for prefix, done, after in parts}
    assert campaign.listed_at is None and 0 < written < len(IMAGES)
    assert stopped["vol/f1/o2/"] == (False, "vol/f1/o2/line_013.png")  # two pages of 7 committed, then the outage

    listed = continue_listing(settings, Campaign.model_validate(campaign._mapping))
    assert listed.keys == len(IMAGES) and listed.skipped == {".txt": 1, ".gt.txt": 1, "(no suffix)": 1}
    with engine.connect() as conn:
        keys = conn.execute(select(Line.__table__.c.key).where(Line.__table__.c.campaign_id == campaign.id)).scalars().all()
        shards = conn.execute(
            text("SELECT s.line_count, count(l.id) FROM shard s JOIN line l ON l.shard_id = s.id WHERE s.campaign_id = :c GROUP BY s.id"),
            {"c": campaign.id},
        ).all()
        done = conn.execute(select(Campaign).where(Campaign.name == "interrupted")).one()
    assert sorted(keys) == sorted(IMAGES)  # every image once (the unique index would refuse a repeat)
    assert all(count == n <= 6 for n, count in shards) and sum(n for n, _ in shards) == len(IMAGES)
    assert done.listed_at is not None and done.line_count == len(IMAGES) and done.shard_count == len(shards)
    assert done.skipped_files == {".txt": 1, ".gt.txt": 1, "(no suffix)": 1}


def test_one_lister_per_campaign(bucket: str, seaweedfs, s3_env, postgres_url: str, tiny_model: Path) -> None:
    settings = Settings(database_url=postgres_url, s3_endpoint_url=seaweedfs.url)
    campaign, _ = create_campaign(settings, SubmitRequest("s3://ranges/vol/f3/", str(tiny_model), "locked", shard_size=10, queue="q"))
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), {"c": 0x70697361, "o": campaign.id}).scalar_one()
        with pytest.raises(ListingBusy, match="another process is listing this campaign"):
            list_into_catalog(settings.catalog_url, campaign.id, S3Storage(bucket, "vol/f3/", settings), threads=2)
    with engine.connect() as conn:
        assert conn.execute(select(Shard.__table__.c.line_count).where(Shard.__table__.c.campaign_id == campaign.id)).scalars().all() == [
            10,
            10,
            3,
        ]


def test_the_producer_describes_the_model_from_its_files_and_never_imports_torch(tmp_path: Path, print_lines: Path) -> None:
    """`submit` records preprocessing and generation from the model's JSON files: torch would cost it 350 MB."""
    import json
    import subprocess
    import sys

    source = lines_folder(tmp_path, print_lines, 3)
    script = f"""
import json, sys
from pisar.settings import Settings
from pisar.producer.submit import SubmitRequest, create_campaign
from pisar.catalog.db import ensure_ready
settings = Settings(catalog_path={str(tmp_path / "c.db")!r})
ensure_ready(settings.catalog_url, auto_upgrade=True)
campaign, _ = create_campaign(settings, SubmitRequest({str(source)!r}, {str(DEMO_MODEL)!r}, "light", 2, "q"))
print(json.dumps({{"heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules),
                  "preprocessing": campaign.preprocessing, "generation": campaign.generation, "versions": campaign.versions}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout.strip().splitlines()[-1])
    assert described["heavy"] == []
    assert described["preprocessing"]["size"] == {"height": 40, "width": 1024} and described["preprocessing"]["resample"] == 3
    assert described["preprocessing"]["image_processor"] == "ViTImageProcessor"
    assert described["generation"]["effective"]["max_new_tokens"] == 160 and described["generation"]["overrides"]["num_beams"] == 1
    assert described["versions"]["torch"].startswith("2.13.0")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda folder: (folder / "config.json").write_text('{"model_type": "bert"}'), "is not a VisionEncoderDecoder model"),
        (lambda folder: (folder / "processor_config.json").unlink(), "has no image processor"),
        (lambda folder: (folder / "tokenizer.json").unlink(), "has no tokenizer"),
    ],
)
def test_a_model_no_worker_could_load_is_refused_at_submit(change, message: str, tmp_path: Path) -> None:
    import shutil

    from pisar.errors import ConfigError
    from pisar.model_ref import ModelRef
    from pisar.processor import check_model_files

    folder = shutil.copytree(DEMO_MODEL, tmp_path / "model")
    check_model_files(ModelRef(str(folder), None))
    change(folder)
    with pytest.raises(ConfigError, match=message):
        check_model_files(ModelRef(str(folder), None))
