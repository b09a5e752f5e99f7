"""Listing and reading line images from a local folder and from a real SeaweedFS S3 gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from pisar.errors import ConfigError, MissingObject, NotFound
from pisar.s3_storage import S3Storage
from pisar.settings import Settings
from pisar.storage import LocalStorage, list_images, open_storage, parse_s3_url


def make_tree(root: Path) -> None:
    for name in ("a.PNG", "b.jpg", "c.JPEG", "d.tif", "e.TIFF", "f.jp2", "g.webp", "h.bmp", "sub/i.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    for name in ("a.gt.txt", "notes.txt", "README", "sub/i.gt.txt"):
        (root / name).write_text("t")


def test_local_listing_takes_image_suffixes_in_any_case_and_counts_the_rest(tmp_path: Path) -> None:
    make_tree(tmp_path)
    listing = list_images(LocalStorage(tmp_path))
    assert listing.keys == sorted(["a.PNG", "b.jpg", "c.JPEG", "d.tif", "e.TIFF", "f.jp2", "g.webp", "h.bmp", "sub/i.png"])
    assert listing.skipped == {".gt.txt": 2, ".txt": 1, "(no suffix)": 1}


def test_local_keys_are_data_not_paths(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(MissingObject):
        storage.read("../secret.png")
    with pytest.raises(MissingObject):
        storage.read("gone.png")


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://Bad_Bucket!/x", "s3://b/x?versionId=1", "gs://bucket/x"])
def test_bad_source_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        if url.startswith("s3:"):
            parse_s3_url(url)
        else:
            open_storage(url, Settings())


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        open_storage(str(tmp_path / "nope"), Settings())


def test_s3_listing_paginates_and_reads(s3, seaweedfs, print_lines: Path) -> None:
    s3.create_bucket(Bucket="listing")
    files = sorted(print_lines.iterdir())[:250]
    for path in files:
        s3.put_object(Bucket="listing", Key=f"vol/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket="listing", Key="other/x.png", Body=b"x")
    settings = Settings(s3_endpoint_url=seaweedfs.url)
    storage = S3Storage("listing", "vol/", settings, page_size=37)
    listing = list_images(storage)
    images = [p for p in files if p.suffix == ".png"]
    assert listing.keys == sorted(f"vol/{p.name}" for p in images)
    assert listing.skipped == {".gt.txt": len(files) - len(images)}
    assert storage.read(listing.keys[0]) == (print_lines / listing.keys[0].removeprefix("vol/")).read_bytes()
    with pytest.raises(MissingObject):
        storage.read("vol/none.png")
    with pytest.raises(NotFound):
        list_images(S3Storage("no-such-bucket", "", settings))


class Refused:
    """A boto3 client that fails the test if it is asked to read or list: the fast path must not need it."""

    def __getattr__(self, name: str):
        raise AssertionError(f"boto3 was asked to {name}")


def test_s3_reads_and_listings_go_through_obstore_and_boto3_serves_only_what_it_cannot_name(s3, seaweedfs) -> None:
    """obstore (off the GIL) reads and lists; boto3 is used only for keys object_store cannot represent
    (a control character; dot and empty segments too, where a server allows them), and a listing that meets one goes on
    through boto3 from the last key obstore gave, byte-exact either way."""
    s3.create_bucket(Bucket="fast")
    plain = [f"vol/{name}" for name in ("a.png", "b b/ü%20#?.png", "c+d.png", "ø/é.png")]
    odd = ["vol/new\nline.png", "vol/esc\x1b[31m.png", "vol/tab\tkey.png"]  # (SeaweedFS refuses dot and empty segments outright)
    for key in plain + odd:
        s3.put_object(Bucket="fast", Key=key, Body=key.encode())
    storage = S3Storage("fast", "vol/", Settings(s3_endpoint_url=seaweedfs.url), page_size=2)
    assert storage.store is not None
    boto3_client, storage.client = storage.client, Refused()
    assert [storage.read(k) for k in plain] == [k.encode() for k in plain]
    with pytest.raises(MissingObject):
        storage.read("vol/gone.png")
    clean = S3Storage("fast", "vol/ø/", Settings(s3_endpoint_url=seaweedfs.url))
    clean.client = Refused()
    assert list_images(clean).keys == ["vol/ø/é.png"]
    storage.client = boto3_client  # the odd keys need it
    assert [storage.read(k) for k in odd] == [k.encode() for k in odd]
    assert sorted(list_images(storage).keys) == sorted(plain + odd)  # the listing met "new\nline" and went on


def test_runs_of_page_folders_list_through_obstore_and_resume_through_boto3(s3, seaweedfs) -> None:
    """A level of many page folders is cut into runs (``KeyRange.folders``); a fresh run lists each
    folder through obstore, in the run's order, with the same keys as boto3's one listing of the
    parent; a resumed run, and the rest of a run that meets a key obstore cannot name, go through boto3."""
    s3.create_bucket(Bucket="runs")
    keys = [f"fond/p{page:02d}/{sub}line_{line}.png" for page in range(12) for sub in ("", "deep/") for line in range(3)]
    keys += ["fond/beside.png", "fond/p05/odd\x1bkey.png"]  # an object beside the folders; a key object_store cannot name
    for key in keys:
        s3.put_object(Bucket="runs", Key=key, Body=b"x")
    storage = S3Storage("runs", "fond/", Settings(s3_endpoint_url=seaweedfs.url), page_size=4)
    ranges = storage.key_ranges(4)
    runs = [part for part in ranges if part.folders]
    assert runs and sum(len(part.folders) for part in runs) == 12
    boto3_client = storage.client
    boto3_only = S3Storage("runs", "fond/", Settings(s3_endpoint_url=seaweedfs.url, s3_client="boto3"), page_size=4)
    expected = {part: [k for page in boto3_only.list_range(part, None) for k in page] for part in runs}
    clean = [part for part in runs if "fond/p05/" not in part.folders]
    storage.client = Refused()
    for part in clean:  # obstore alone: boto3 would fail the test
        assert [k for page in storage.list_range(part, None) for k in page] == expected[part]
    storage.client = boto3_client
    (odd,) = [part for part in runs if "fond/p05/" in part.folders]
    assert [k for page in storage.list_range(odd, None) for k in page] == expected[odd]  # boto3 from the last key obstore gave
    resumed = [k for page in storage.list_range(clean[0], expected[clean[0]][4]) for k in page]
    assert resumed == expected[clean[0]][5:]
    listed = [k for part in ranges for page in storage.list_range(part, None) for k in page]
    assert sorted(listed) == sorted(keys)  # every key once, the parent's own object included


def test_with_boto3_chosen_nothing_goes_through_obstore(seaweedfs) -> None:
    assert S3Storage("any", "", Settings(s3_endpoint_url=seaweedfs.url, s3_client="boto3")).store is None
