"""A page campaign's shard input (pisar/sources/page_lines.py) on a real SeaweedFS: each PAGE file and its scan read
once per shard however many threads cut its lines, each line cut exactly, every bad page or line a
recorded line error."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pisar.errors import LineNotInLayout, MissingObject, NoGeometry, NoLineId, UnreadableLayout
from pisar.images import ImageLimits
from pisar.layout import line_key, scan_key, split_line_key
from pisar.s3_storage import S3Storage
from pisar.settings import Settings
from pisar.sources.page_lines import ShardPages
from pisar.worker.batches import prepare_ahead
from tests.helpers.pages import page_xml, pasted_page, rectangle

LIMITS = ImageLimits(89_478_485, 4, 16_384)
BUCKETS = itertools.count()


class Counting:
    """A storage that counts its reads per key (the real one beneath)."""

    def __init__(self, storage: S3Storage) -> None:
        self.storage, self.reads = storage, {}

    def read(self, key: str) -> bytes:
        self.reads[key] = self.reads.get(key, 0) + 1
        return self.storage.read(key)

    def scan_for(self, layout_key: str, named: str) -> str:
        return self.storage.scan_for(layout_key, named)


def png(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def prepare_all(lines: ShardPages, keys: list[str], threads: int = 8) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(prepare_ahead(keys, lines.prepare, pool, window=64))


@pytest.fixture
def bucket(s3) -> str:
    """A bucket of its own per test (the server is shared by the module)."""
    name = f"pages-{next(BUCKETS)}"
    s3.create_bucket(Bucket=name)
    return name


def storage_of(bucket: str, seaweedfs) -> Counting:
    return Counting(S3Storage(bucket, "", Settings(s3_endpoint_url=seaweedfs.url)))


def test_a_pasted_page_gives_back_each_real_line_and_is_read_once(bucket: str, s3, seaweedfs, print_lines: Path) -> None:
    paths = [p for p in sorted(print_lines.glob("*.png")) if Image.open(p).width < 2300][:12]
    canvas, placed = pasted_page(paths, seed=3)
    ids = [f"l{n}" for n in range(len(placed))]
    polygons = [rectangle(left, top, *Image.open(path).size) for path, (left, top) in placed]
    s3.put_object(Bucket=bucket, Key="fond/vol/p1.png", Body=png(canvas))
    s3.put_object(Bucket=bucket, Key="fond/vol/p1.xml", Body=page_xml("p1.png", canvas.size, list(zip(ids, polygons, strict=True))))
    storage = storage_of(bucket, seaweedfs)
    keys = [line_key("fond/vol/p1.xml", line_id) for line_id in ids]
    for crop in ("polygon", "box"):  # a rectangle's polygon whitens nothing: both crops give the line back
        storage.reads.clear()
        lines = ShardPages(storage, LIMITS, np.asarray, keys, crop=crop)
        prepared = prepare_all(lines, keys)
        assert [p.key for p in prepared] == keys and all(p.error is None for p in prepared)
        for item, (path, _) in zip(prepared, placed, strict=True):
            assert np.array_equal(item.pixels, np.asarray(Image.open(path).convert("L"))), path.name
        assert storage.reads == {"fond/vol/p1.xml": 1, "fond/vol/p1.png": 1}  # eight threads, twelve lines: one read each
        assert lines.pages_in_memory == 0  # the page is let go after its last line


def test_the_transkribus_page_cuts_all_44_lines_from_one_read(bucket: str, s3, seaweedfs, kraken_page: Path) -> None:
    folder = kraken_page
    for name in ("170025120000003,0074.xml", "170025120000003,0074.jpg"):
        s3.put_object(Bucket=bucket, Key=f"archive/{name}", Body=(folder / name).read_bytes())
    from pisar.layout import read_layout

    layout = read_layout((folder / "170025120000003,0074.xml").read_bytes())
    keys = [line_key("archive/170025120000003,0074.xml", line.line_id) for line in layout.lines]
    storage = storage_of(bucket, seaweedfs)
    prepared = prepare_all(ShardPages(storage, LIMITS, np.asarray, keys), keys)
    assert all(p.error is None for p in prepared), [p.error for p in prepared if p.error]
    assert [p.size for p in prepared] == [(r - left, b - t) for left, t, r, b in (line.box for line in layout.lines)]
    assert all(p.pixels.ndim == 2 for p in prepared)  # a grey-scale scan gives grey-scale lines (one channel to resize)
    assert sorted(storage.reads.values()) == [1, 1]


def test_a_scans_bytes_meet_the_decode_observers_once_and_a_refusal_is_every_lines(bucket: str, s3, seaweedfs, kraken_page: Path) -> None:
    """``pisar.images.BEFORE_DECODE`` (where the fault hooks and a deployment's scanner sit) sees a page
    campaign's scans as it sees line images: once per page, and a refusal is the error of each line."""
    from pisar.errors import UnreadableImage
    from pisar.images import BEFORE_DECODE
    from pisar.layout import read_layout

    scan = (kraken_page / "170025120000003,0074.jpg").read_bytes()
    for name in ("170025120000003,0074.xml", "170025120000003,0074.jpg"):
        s3.put_object(Bucket=bucket, Key=f"seen/{name}", Body=(kraken_page / name).read_bytes())
    layout = read_layout((kraken_page / "170025120000003,0074.xml").read_bytes())
    keys = [line_key("seen/170025120000003,0074.xml", line.line_id) for line in layout.lines]
    seen: list[bytes] = []

    def refuse(data: bytes) -> None:
        seen.append(data)
        raise UnreadableImage("refused by the scanner")

    BEFORE_DECODE.append(refuse)
    try:
        prepared = prepare_all(ShardPages(storage_of(bucket, seaweedfs), LIMITS, np.asarray, keys), keys)
    finally:
        BEFORE_DECODE.remove(refuse)
    assert seen == [scan]
    assert [str(p.error) for p in prepared] == ["refused by the scanner"] * len(keys)


def test_bad_pages_and_lines_are_recorded_per_line(bucket: str, s3, seaweedfs, print_lines: Path) -> None:
    canvas, placed = pasted_page(sorted(print_lines.glob("*.png"))[:3], seed=1)
    polygons = [rectangle(left, top, 300, 40) for _, (left, top) in placed]
    good = page_xml("scan.png", canvas.size, [("a", polygons[0]), ("b", polygons[1]), ("c", polygons[2])])
    s3.put_object(Bucket=bucket, Key="v/scan.png", Body=png(canvas))
    objects = {
        "v/ok.xml": good,
        "v/broken.xml": b"<PcGts",
        "v/noscan.xml": good.replace(b"scan.png", b"gone.png"),
        "v/escape.xml": good.replace(b"scan.png", b"../../other/scan.png"),
    }
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    keys = [
        line_key("v/ok.xml", "a"),
        line_key("v/ok.xml", "zz"),  # not in the file (any more)
        line_key("v/broken.xml", ""),
        line_key("v/noscan.xml", "a"),
        line_key("v/noscan.xml", "b"),
        line_key("v/escape.xml", "a"),
        line_key("v/missing.xml", "a"),
    ]
    prepared = {p.key: p for p in prepare_all(ShardPages(storage_of(bucket, seaweedfs), LIMITS, np.asarray, keys), keys)}
    assert prepared["v/ok.xml#a"].error is None
    kinds = {key: type(p.error) for key, p in prepared.items() if p.error is not None}
    assert kinds == {
        "v/ok.xml#zz": LineNotInLayout,
        "v/broken.xml#": UnreadableLayout,
        "v/noscan.xml#a": MissingObject,
        "v/noscan.xml#b": MissingObject,  # every line of a page whose scan is gone
        "v/escape.xml#a": UnreadableLayout,
        "v/missing.xml#a": MissingObject,
    }
    assert "outside the source" in str(prepared["v/escape.xml#a"].error)


def test_a_line_without_an_id_or_geometry_is_its_own_error(bucket: str, s3, seaweedfs, print_lines: Path) -> None:
    canvas, placed = pasted_page(sorted(print_lines.glob("*.png"))[:2], seed=2)
    (_, (left, top)), _ = placed
    xml = page_xml("s.png", canvas.size, [("kept", rectangle(left, top, 200, 30)), ("", ()), ("bare", ())])
    xml = xml.replace(b'<TextLine id="">', b"<TextLine>", 1).replace(b'<Coords points=""/>', b"", 2)
    s3.put_object(Bucket=bucket, Key="s.png", Body=png(canvas))
    s3.put_object(Bucket=bucket, Key="s.xml", Body=xml)
    keys = [line_key("s.xml", "kept"), line_key("s.xml", "(no id: line 2)"), line_key("s.xml", "bare")]
    prepared = prepare_all(ShardPages(storage_of(bucket, seaweedfs), LIMITS, np.asarray, keys), keys)
    assert prepared[0].error is None and prepared[0].size == (200, 30)
    assert isinstance(prepared[1].error, NoLineId) and isinstance(prepared[2].error, NoGeometry)


def test_keys_and_image_names() -> None:
    assert split_line_key(line_key("a#b/page 1.xml", "line_7")) == ("a#b/page 1.xml", "line_7")  # the last # splits
    with pytest.raises(ValueError):
        split_line_key("plain.png")
    assert scan_key("fond/vol/p.xml", "p.jpg") == "fond/vol/p.jpg"
    assert scan_key("fond/vol/p.xml", "../images/p.jpg") == "fond/images/p.jpg"
    assert scan_key("fond/vol/p.xml", "C:\\Users\\me\\export\\p.jpg") == "fond/vol/p.jpg"  # a Windows path: its file name
    assert scan_key("p.xml", "file:///home/me/p.jpg") == "p.jpg"
    for outside in ("../p.jpg", "../../x/p.jpg"):
        with pytest.raises(UnreadableLayout, match="outside the source"):
            scan_key("fond/p.xml", "../" + outside)
    with pytest.raises(UnreadableLayout, match="names no image"):
        scan_key("fond/p.xml", "  ")
