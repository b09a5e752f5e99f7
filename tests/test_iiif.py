"""IIIF as a campaign source, against the Image API reference server and a static manifest server on loopback.

The same two pages (the Transkribus page and a page of pasted print lines, each with its PAGE
file) are read from a folder and through IIIF manifests (Presentation 3.0 and 2.1, Image API 3.0
and 2.1, gathered by a collection): the records must be the same. Hostile manifests and servers
each end in their recorded outcome, and no request reaches a forbidden address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
from PIL import Image
from sqlalchemy import func, select

from infra.local_services import unconfigured_env
from pisar.catalog.canvases import CanvasRow
from pisar.catalog.db import get_engine
from pisar.catalog.models import IiifManifest, Line
from pisar.errors import FetchFailed, MissingObject, NotFound, TransientError
from pisar.iiif.addresses import AddressPolicy, ForbiddenAddress, parse_networks
from pisar.iiif.client import ClientLimits, IiifClient, ResponseTooLarge
from pisar.iiif.image_api import ImageInfo, allowed_size, image_url, read_info
from pisar.iiif.matching import match_layouts
from pisar.iiif.presentation import Collection, Manifest, UnreadableManifest, read_document
from pisar.iiif.storage import slug_of
from pisar.settings import Settings
from pisar.storage import open_storage
from tests.helpers.cli import assert_one_line_error, read_jsonl, run_pisar, wait_until
from tests.helpers.iiif import (
    ARCHIVE_NETWORK,
    CAPPED_WIDTH,
    Listener,
    Misbehaving,
    canvas_v2,
    canvas_v3,
    collection_v3,
    manifest_v2,
    manifest_v3,
    start_image_server,
    start_static_server,
    write_json,
)
from tests.helpers.pages import page_xml, pasted_page, rectangle
from tests.helpers.stored_detector import DETECT_ENV

TRANSKRIBUS = "170025120000003,0074"
MB = 1 << 20


@dataclass
class Archive:
    """Two pages served as an archive would: scans by the Image API, manifests and PAGE files by a web server."""

    folder: Path  # the same pages as files: scans beside their PAGE files
    images: str  # the image server's URL
    static: str  # the manifest server's URL
    static_dir: Path
    sizes: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, kraken_page: Path, print_lines: Path) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("iiif")
    folder, images, static = root / "folder", root / "images", root / "static"
    for path in (folder, images, static / "layouts"):
        path.mkdir(parents=True)
    scan = (kraken_page / f"{TRANSKRIBUS}.jpg").read_bytes()
    (folder / f"{TRANSKRIBUS}.jpg").write_bytes(scan)
    (images / "kraken.jpg").write_bytes(scan)
    layout = (kraken_page / f"{TRANSKRIBUS}.xml").read_bytes()
    (folder / f"{TRANSKRIBUS}.xml").write_bytes(layout)
    (static / "layouts" / "kraken.xml").write_bytes(layout)
    paths = [p for p in sorted(print_lines.glob("*.png")) if Image.open(p).width < 2300][:6]
    canvas, placed = pasted_page(paths, seed=3)
    canvas.save(folder / "pasted.png")
    canvas.save(images / "pasted.png")
    lines = [(f"l{n:02d}", rectangle(left, top, *Image.open(path).size)) for n, (path, (left, top)) in enumerate(placed)]
    (folder / "pasted.xml").write_bytes(page_xml("pasted.png", canvas.size, lines))
    (static / "layouts" / "pasted.xml").write_bytes(page_xml("pasted.png", canvas.size, lines))
    image_server, static_server = start_image_server(images), start_static_server(static)
    sizes = {"kraken": Image.open(folder / f"{TRANSKRIBUS}.jpg").size, "pasted": canvas.size}
    served = Archive(folder, image_server.url, static_server.url, static, sizes)
    _write_manifests(served)
    yield served
    image_server.stop()
    static_server.stop()


def _write_manifests(archive: Archive) -> None:
    base = archive.static
    for version, canvas, manifest in (("3", canvas_v3, manifest_v3), ("2", canvas_v2, manifest_v2)):
        api = "3.0_pil" if version == "3" else "2.1_pil"
        items = [
            canvas(
                f"{base}/book-v{version}/canvas/{n}",
                name,
                archive.sizes[name],
                f"{archive.images}/{api}/{name}",
                f"{base}/layouts/{name}.xml",
            )
            for n, name in enumerate(("kraken", "pasted"), start=1)
        ]
        write_json(
            archive.static_dir / f"book-v{version}" / "manifest.json",
            manifest(f"{base}/book-v{version}/manifest.json", f"Book v{version}", items),
        )
    write_json(
        archive.static_dir / "collection.json",
        collection_v3(f"{base}/collection.json", [f"{base}/book-v3/manifest.json", f"{base}/book-v2/manifest.json"]),
    )


def _client(**limits: float) -> IiifClient:
    return IiifClient(AddressPolicy(parse_networks([ARCHIVE_NETWORK])), ClientLimits(**limits))  # type: ignore[arg-type]


# Parts ------------------------------------------------------------------------------------------


def test_manifests_of_both_versions_read_into_the_same_canvases(archive: Archive) -> None:
    client = _client()
    read = {}
    for version in ("3", "2"):
        url = f"{archive.static}/book-v{version}/manifest.json"
        read[version] = read_document(client.get(url, MB, "manifest"), url, MB)
        assert isinstance(read[version], Manifest) and read[version].version == int(version)
    for v3, v2 in zip(read["3"].canvases, read["2"].canvases, strict=True):
        assert (v3.ordinal, v3.label, v3.width, v3.height) == (v2.ordinal, v2.label, v2.width, v2.height)
        assert v3.service.endswith(f"3.0_pil/{v3.label}") and v3.service_version == 3
        assert v2.service.endswith(f"2.1_pil/{v2.label}") and v2.service_version == 2
        assert v3.layout == v2.layout == f"{archive.static}/layouts/{v3.label}.xml"
    collection = read_document(client.get(f"{archive.static}/collection.json", MB, "manifest"), "c", MB)
    assert isinstance(collection, Collection) and collection.members == [
        f"{archive.static}/book-v3/manifest.json",
        f"{archive.static}/book-v2/manifest.json",
    ]
    assert slug_of(f"{archive.static}/book-v3/manifest.json") == f"{archive.static.removeprefix('http://').replace(':', '_')}/book-v3"


def test_info_and_image_requests_keep_to_the_servers_limits(archive: Archive) -> None:
    client = _client()
    for api, version in (("3.0_pil", 3), ("2.1_pil", 2)):
        service = f"{archive.images}/{api}/pasted"
        info = read_info(client.get(f"{service}/info.json", MB, "info"), service, None)
        assert (info.version, info.width, info.height) == (version, *archive.sizes["pasted"])
        url, size = image_url(info, image_format="png")
        assert size == archive.sizes["pasted"] and url.endswith(("/full/max/0/default.png", "/full/full/0/default.png"))
        assert Image.open(__import__("io").BytesIO(client.get(url, 64 * MB, "image"))).size == size
    v2_profile = {
        "@context": "http://iiif.io/api/image/2/context.json",
        "width": 4000,
        "height": 3000,
        "profile": ["http://iiif.io/api/image/2/level2.json", {"maxWidth": 2000}],
    }
    assert read_info(json.dumps(v2_profile).encode(), "https://x/i", None) == ImageInfo("https://x/i", 2, 4000, 3000, max_width=2000)
    capped = ImageInfo("https://x/i", 3, 4000, 3000, max_width=2000)
    assert allowed_size(capped, 4000, 3000) == (2000, 1500)
    assert image_url(capped)[0] == "https://x/i/full/2000,1500/0/default.jpg"
    assert allowed_size(ImageInfo("https://x/i", 2, 4000, 3000, max_area=3_000_000), 4000, 3000) == (2000, 1500)
    assert image_url(ImageInfo("https://x/i", 2, 4000, 3000, max_height=1000))[0] == "https://x/i/full/1333,/0/default.jpg"
    assert image_url(capped, (10, 20, 300, 40))[0] == "https://x/i/10,20,300,40/max/0/default.jpg"


@pytest.mark.parametrize(
    ("path", "error"),
    [("/notjson", "not JSON"), ("/deep", "nested deeper than"), ("/huge", "over the")],
)
def test_hostile_manifests_are_refused_with_one_sentence(path: str, error: str) -> None:
    server = Misbehaving()
    try:
        client = _client()
        with pytest.raises((UnreadableManifest, ResponseTooLarge), match=error):
            read_document(client.get(server.url + path, 32 * MB, "manifest"), server.url + path, 32 * MB)
    finally:
        server.close()


def test_a_busy_server_is_waited_for_and_a_hanging_one_given_up(archive: Archive) -> None:
    server = Misbehaving(upstream=archive.images)
    try:
        client = _client(read_timeout=0.5, attempts=2, backoff_first=0.1)
        started = time.monotonic()
        info = client.get(f"{server.url}/busy/3.0_pil/pasted/info.json", MB, "info")
        assert json.loads(info)["width"] == archive.sizes["pasted"][0]
        assert server.hits["/busy/3.0_pil/pasted/info.json"] == 2 and time.monotonic() - started >= 1.0  # Retry-After: 1 obeyed
        ((agent, encoding),) = server.agents  # every request says who asks, and asks for nothing compressed
        assert agent.startswith("Pisar/") and encoding == "identity"
        with pytest.raises(FetchFailed, match="no answer in time"):
            client.get(f"{server.url}/hang", MB, "info")
        assert server.hits["/hang"] == 2
        with pytest.raises(MissingObject):
            client.get(f"{server.url}/nothing", MB, "info")
    finally:
        server.close()


def test_no_request_reaches_a_forbidden_address() -> None:
    inside = Listener("127.0.0.1")  # where Redis and Postgres listen: loopback, outside the allowed archive network
    server = Misbehaving()
    try:
        client = _client(connect_timeout=1, attempts=1)
        for url in (
            f"http://127.0.0.1:{inside.port}/info.json",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/iiif/info.json",
            "http://[::1]/info.json",
            f"http://localhost:{inside.port}/info.json",
            "http://127.0.0.1:6379/info.json",  # the broker
            "http://[::ffff:127.0.0.1]/info.json",
        ):
            with pytest.raises(ForbiddenAddress):
                client.get(url, MB, "info")
        with pytest.raises(FetchFailed, match="only http and https"):
            client.get(f"{server.url}/redirect?to=file:///etc/passwd", MB, "info")
        for elsewhere in (f"http://127.0.0.1:{inside.port}/info.json", "http://iiif.example.org/info.json"):  # hosts no manifest names
            with pytest.raises(FetchFailed, match="redirected to another host"):
                client.get(f"{server.url}/redirect?to={elsewhere}", MB, "info")
        assert inside.connections == 0
        with pytest.raises(TransientError):  # a public name that does not resolve here: an outage, not the line's fault
            IiifClient(AddressPolicy(), ClientLimits(attempts=1)).get("http://iiif.invalid/x", MB, "info")
    finally:
        inside.close()
        server.close()
    assert AddressPolicy().permits(__import__("ipaddress").ip_address("93.184.215.14"))


def test_the_address_policy_binds_the_iiif_client_alone() -> None:
    """Other HTTP clients in the process (botocore's, selenium's: urllib3 pool managers too) still reach
    loopback after a IIIF client exists: its checked connections are its own, not urllib3's defaults."""
    import urllib3

    local = Misbehaving(host="127.0.0.1")
    try:
        client = _client(attempts=1)
        with pytest.raises(ForbiddenAddress):
            client.get(f"{local.url}/nothing", MB, "info")
        assert urllib3.PoolManager().request("GET", f"{local.url}/nothing").status == 404  # reached: the server answered
        assert local.hits["/nothing"] == 1  # the plain client's request, not the IIIF client's
    finally:
        local.close()


def test_a_worker_opens_a_iiif_source_whose_listing_file_it_cannot_see(tmp_path: Path) -> None:
    """Workers read the catalog's canvases; only the producer reads the source's file (refused there if missing)."""
    storage = open_storage(f"iiif:{tmp_path}/gone.txt", Settings(catalog_path=tmp_path / "c.db"), campaign_id=1)
    assert storage.url == f"iiif:{tmp_path}/gone.txt"
    with pytest.raises(NotFound):
        storage.key_ranges(4)


def test_layout_files_match_one_canvas_each_or_none() -> None:
    def canvas(key: str, label: str, service: str) -> CanvasRow:
        return CanvasRow(key, "https://a/m", f"https://a/c/{key}", 1, label, 10, 10, service, 3, None, None)

    rows = [
        canvas("m/p0001", "Folio 1r", "https://img/iiif/f001"),
        canvas("m/p0002", "Folio 1v", "https://img/iiif/f002"),
        canvas("m/p0003", "x", "https://img/iiif/same"),
    ]
    layouts = {
        "page/0001.xml": "F001.JPG",  # the service's identifier, any case, any suffix
        "page/folio 1v.xml": "scan.tif",  # its own file name names the canvas's label
        "page/stray.xml": "elsewhere.jpg",
        "page/a.xml": "same.jpg",  # two files name one canvas: neither is used
        "page/b.xml": "same.png",
    }
    matched = match_layouts(rows, layouts)
    assert matched.layouts == {"m/p0001": "page/0001.xml", "m/p0002": "page/folio 1v.xml"}
    assert matched.unmatched == ["page/stray.xml"] and sorted(matched.ambiguous) == ["page/a.xml", "page/b.xml"]


# Campaigns ----------------------------------------------------------------------------------------


def _iiif_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "PISAR_IIIF_ALLOW_NETWORKS": ARCHIVE_NETWORK,
        "PISAR_IIIF_IMAGE_FORMAT": "png",
        "PISAR_IIIF_READ_TIMEOUT_SECONDS": "2",
        "PISAR_IIIF_ATTEMPTS": "2",
    }


@pytest.mark.slow
def test_a_collection_of_v2_and_v3_manifests_reads_the_same_records_as_the_folder(
    archive: Archive, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    env = _iiif_env(embedded_env)
    common = ["--layout", "xml", "--crop", "box", "--model", str(tiny_model), "--shard-size", "20"]
    from_folder = run_pisar(
        ["run", str(archive.folder), "--name", "folder", "-o", str(tmp_path / "folder.jsonl"), *common], env, timeout=600
    )
    assert from_folder.returncode == 0, from_folder.stderr
    from_iiif = run_pisar(
        ["run", f"{archive.static}/collection.json", "--name", "iiif", "-o", str(tmp_path / "iiif.jsonl"), *common], env, timeout=600
    )
    assert from_iiif.returncode == 0, from_iiif.stderr
    folder = {
        (r["page"].removesuffix(".xml").replace(TRANSKRIBUS, "kraken"), r["line_id"]): r for r in read_jsonl(tmp_path / "folder.jsonl")
    }
    assert len(folder) == 44 + 6
    records = read_jsonl(tmp_path / "iiif.jsonl")
    assert len(records) == 2 * len(folder)
    host = archive.static.removeprefix("http://").replace(":", "_")
    for version in ("3", "2"):
        for ordinal, name in ((1, "kraken"), (2, "pasted")):
            page = f"{host}/book-v{version}/p{ordinal:04d}"
            mine = {r["line_id"]: r for r in records if r["page"] == f"{page}.xml"}
            assert len(mine) == sum(1 for p, _ in folder if p == name)
            for line_id, record in mine.items():
                expected = folder[(name, line_id)]
                assert record["key"] == f"{page}.xml#{line_id}" and record["image"] == f"{page}.jpg"
                for field in ("status", "text", "region_id", "reading_order"):
                    assert record[field] == expected[field], (version, name, line_id, field)
                # batches form as pages arrive: a line's batch-mates may differ, its probabilities only by float32 rounding
                assert record["confidence"] == pytest.approx(expected["confidence"], abs=1e-4)
                assert record["word_confidences"] == pytest.approx(expected["word_confidences"], abs=1e-3)
    engine = get_engine(Settings(catalog_path=embedded_env["PISAR_CATALOG_PATH"]).catalog_url)
    with engine.connect() as conn:
        manifests = conn.execute(
            select(IiifManifest.__table__.c.url, IiifManifest.__table__.c.version, IiifManifest.__table__.c.error_class)
        ).all()
    assert sorted(manifests) == sorted(
        [(f"{archive.static}/book-v3/manifest.json", 3, None), (f"{archive.static}/book-v2/manifest.json", 2, None)]
    )
    _check_exports(archive, env, tmp_path, host, records)


def _check_exports(archive: Archive, env: dict[str, str], tmp_path: Path, host: str, records: list[dict]) -> None:
    """Annotations, MiniOCR and hOCR of the IIIF campaign: every line, on its canvas, in each format's structure."""
    texts = {(r["page"], r["line_id"]): r["text"] for r in records}
    web = tmp_path / "web"
    exported = run_pisar(["export", "iiif", "--format", "annotations", "-o", str(web), "--base-url", "https://archive.example/text"], env)
    assert exported.returncode == 0, exported.stderr
    found = {}
    for version in ("3", "2"):
        copy = json.loads((web / host / f"book-v{version}" / "manifest.json").read_text())
        canvases = copy["items"] if version == "3" else copy["sequences"][0]["canvases"]
        for ordinal, canvas in enumerate(canvases, start=1):
            page = f"{host}/book-v{version}/p{ordinal:04d}"
            linked = canvas["annotations"][0]["id"] if version == "3" else canvas["otherContent"][0]["@id"]
            assert linked == f"https://archive.example/text/{page}.json"
            document = json.loads((web / f"{page}.json").read_text())
            assert document["@context"][-1] == f"http://iiif.io/api/presentation/{version}/context.json"
            items = document["items"] if version == "3" else document["resources"]
            for item in items:
                canvas_id, xywh = (item["target"] if version == "3" else item["on"]).split("#xywh=")
                assert canvas_id == (canvas["id"] if version == "3" else canvas["@id"])
                x, y, w, h = map(int, xywh.split(","))
                assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= canvas["width"] + 1 and y + h <= canvas["height"] + 1
                if version == "3":
                    assert (item["type"], item["motivation"], item["body"]["type"]) == ("Annotation", "supplementing", "TextualBody")
                text = item["body"]["value"] if version == "3" else item["resource"]["chars"]
                assert 0 < item["confidence"] <= 1 and item["model"]
                found[(f"{page}.xml", item["id" if version == "3" else "@id"].rsplit("#", 1)[1])] = text
    assert found == texts  # every line, with its text

    for fmt, suffix in (("miniocr", ".xml"), ("hocr", ".hocr")):
        out = tmp_path / fmt
        exported = run_pisar(["export", "iiif", "--format", fmt, "-o", str(out)], env)
        assert exported.returncode == 0, exported.stderr
        words = {}
        for page in {p for p, _ in texts}:
            document = ElementTree.parse(out / page.replace(".xml", suffix)).getroot()
            if fmt == "miniocr":
                (p,) = document.findall("p")
                width, height = map(int, p.get("wh").split())
                lines = ["".join(l.itertext()).strip() for l in p.iter("l")]
                for w in p.iter("w"):
                    x, y, ww, hh = map(int, w.get("x").split())
                    assert 0 <= x and x + ww <= width and 0 <= y and y + hh <= height
            else:
                lines = [
                    " ".join(w.text for w in l.iter() if w.get("class") == "ocrx_word")
                    for l in document.iter()
                    if l.get("class") == "ocr_line"
                ]
            words[page] = lines
        for page, lines in words.items():
            expected = [
                " ".join(texts[(page, r["line_id"])].split())
                for r in sorted((r for r in records if r["page"] == page), key=lambda r: r["reading_order"])
            ]
            assert [" ".join(line.split()) for line in lines] == expected


@pytest.mark.slow
def test_a_iiif_campaign_on_workers_gives_the_embedded_records(
    archive: Archive,
    tiny_model: Path,
    embedded_env: dict[str, str],
    redis_service,
    postgres_url: str,
    queue_name: str,
    start_worker,
    tmp_path: Path,
) -> None:
    """Distributed: the producer resolves the manifests into Postgres, a worker subprocess reads the pages
    through the Image API (no object store involved); the records equal the embedded run's."""
    common = ["--layout", "xml", "--crop", "box", "--model", str(tiny_model), "--shard-size", "20"]
    source = f"{archive.static}/book-v3/manifest.json"
    embedded = run_pisar(
        ["run", source, "--name", "book", "-o", str(tmp_path / "embedded.jsonl"), *common], _iiif_env(embedded_env), timeout=600
    )
    assert embedded.returncode == 0, embedded.stderr
    env = _iiif_env(
        {
            **unconfigured_env(),
            "PISAR_REDIS_URL": redis_service.url,
            "PISAR_DATABASE_URL": postgres_url,
            "PISAR_QUEUE": queue_name,
            "PISAR_TORCH_THREADS": "1",
        }
    )
    submitted = run_pisar(["submit", source, "--name", "book", *common], env)
    assert submitted.returncode == 0, submitted.stderr
    assert "50 lines in 3 shards" in submitted.stderr
    start_worker(env, "iiif")
    engine = get_engine(Settings(database_url=postgres_url).catalog_url)

    def pending() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(Line.__table__.c.status == "pending")).scalar_one()

    wait_until(lambda: pending() == 0, 300, "every IIIF line read by the worker")
    exported = run_pisar(["export", "book", "-o", str(tmp_path / "distributed.jsonl")], env)
    assert exported.returncode == 0, exported.stderr
    exact = ("key", "status", "text", "page", "line_id", "region_id", "image", "reading_order")
    distributed, embedded_records = read_jsonl(tmp_path / "distributed.jsonl"), read_jsonl(tmp_path / "embedded.jsonl")
    assert len(distributed) == len(embedded_records) == 50
    for there, here in zip(distributed, embedded_records, strict=True):
        assert {f: there[f] for f in exact} == {f: here[f] for f in exact}
        # The lines' batches form as their pages arrive, so a line may share its batch with other
        # lines here than there: the same text, its probabilities equal to float32 rounding.
        assert there["confidence"] == pytest.approx(here["confidence"], abs=1e-4)
        assert there["word_confidences"] == pytest.approx(here["word_confidences"], abs=1e-3)


@pytest.mark.slow
def test_hostile_manifests_and_servers_end_in_recorded_outcomes(
    archive: Archive, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    server = Misbehaving(upstream=archive.images)
    inside = Listener("127.0.0.1")
    try:
        base, layout = archive.static, f"{archive.static}/layouts/pasted.xml"
        size = archive.sizes["pasted"]
        services = {
            "busy": f"{server.url}/busy/3.0_pil/pasted",  # 429, then the image
            "hang": f"{server.url}/hang/3.0_pil/pasted",  # never answers
            "metadata": "http://169.254.169.254/iiif/pasted",  # a cloud's metadata service
            "inside": f"http://127.0.0.1:{inside.port}/iiif/pasted",  # loopback outside the allowed network
            "redirected": f"{server.url}/redirect?to=http://127.0.0.1:{inside.port}/iiif",  # sent inside by a redirect
            "capped": f"{server.url}/capped/3.0_pil/pasted",  # maxWidth 1200: the page comes half size, the layout is scaled
        }
        items = [
            canvas_v3(f"{base}/hostile/canvas/{n}", name, size, url, layout) for n, (name, url) in enumerate(services.items(), start=1)
        ]
        write_json(archive.static_dir / "hostile" / "manifest.json", manifest_v3(f"{base}/hostile/manifest.json", "Hostile", items))
        write_json(
            archive.static_dir / "hostile" / "collection.json", collection_v3(f"{base}/hostile/collection.json", ["file:///etc/passwd"])
        )
        sources = tmp_path / "manifests.txt"
        sources.write_text(
            "\n".join(
                [
                    f"{base}/hostile/manifest.json",
                    f"{server.url}/notjson",
                    f"{server.url}/deep",
                    f"{server.url}/huge",
                    f"{base}/missing.json",
                    f"{base}/hostile/collection.json",  # names a local file as its member
                ]
            )
            + "\n"
        )
        env = {**_iiif_env(embedded_env), "PISAR_IIIF_MAX_MANIFEST_BYTES": str(32 * MB)}
        out = tmp_path / "hostile.jsonl"
        ran = run_pisar(
            ["run", str(sources), "--layout", "xml", "--crop", "box", "--model", str(tiny_model), "--name", "hostile", "-o", str(out)],
            env,
            timeout=600,
        )
        assert "Traceback" not in ran.stderr, ran.stderr
        records = read_jsonl(out)
        by_canvas: dict[str, set[tuple[str, str | None]]] = {}
        for record in records:
            by_canvas.setdefault(record["page"].rsplit("/", 1)[1], set()).add((record["status"], record["error_class"]))
        assert by_canvas == {
            "p0001.xml": {("ok", None)},
            "p0002.xml": {("error", "FetchFailed")},
            "p0003.xml": {("error", "ForbiddenAddress")},
            "p0004.xml": {("error", "ForbiddenAddress")},
            "p0005.xml": {("error", "FetchFailed")},  # redirected to a host the manifest does not name
            "p0006.xml": {("ok", None)},
        }
        capped = [r for r in records if r["page"].endswith("p0006.xml")]
        assert len(capped) == 6 and all(f"to the {CAPPED_WIDTH}x" in (r["note"] or "") for r in capped)
        assert (
            server.hits[
                f"/capped/3.0_pil/pasted/full/{CAPPED_WIDTH},{archive.sizes['pasted'][1] * CAPPED_WIDTH // archive.sizes['pasted'][0]}/0/default.png"
            ]
            == 1
        )
        assert inside.connections == 0
        engine = get_engine(Settings(catalog_path=embedded_env["PISAR_CATALOG_PATH"]).catalog_url)
        with engine.connect() as conn:
            table = IiifManifest.__table__
            errors = dict(conn.execute(select(table.c.url, table.c.error_class).where(table.c.error_class.is_not(None))).all())
        assert errors == {
            f"{server.url}/notjson": "UnreadableManifest",
            f"{server.url}/deep": "UnreadableManifest",
            f"{server.url}/huge": "ResponseTooLarge",
            f"{base}/missing.json": "MissingObject",
            "file:///etc/passwd": "UnreadableManifest",
        }
        report = json.loads(run_pisar(["status", "hostile", "--json"], env).stdout)
        assert report["manifests"] == {"read": 1, "not_read": 5, "canvases": 6}
        assert {row["url"]: row["error_class"] for row in report["manifest_problems"]} == errors
        shown = run_pisar(["status", "hostile"], env)
        assert "manifests 1 read, 5 not read; 6 canvases" in shown.stdout and "UnreadableManifest" in shown.stdout
    finally:
        inside.close()
        server.close()


@pytest.mark.slow
def test_canvases_without_layouts_are_detected_like_the_same_scans_in_a_folder(
    archive: Archive, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    """`--layout detect` over a manifest: each canvas's image is a scan to detect (the stored detector
    stands in for blla, tests/helpers/stored_detector.py), then read; the records equal those of the
    same two scans detected from a folder, and the annotations place every detected line."""
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.jpg").write_bytes((archive.folder / f"{TRANSKRIBUS}.jpg").read_bytes())
    (scans / "b.png").write_bytes((archive.folder / "pasted.png").read_bytes())
    env = _iiif_env({**embedded_env, **DETECT_ENV, "PISAR_TORCH_THREADS": "1"})
    common = ["--layout", "detect", "--model", str(tiny_model)]
    from_folder = run_pisar(["run", str(scans), "--name", "scans", "-o", str(tmp_path / "folder.jsonl"), *common], env, timeout=600)
    assert from_folder.returncode == 0, from_folder.stderr
    from_iiif = run_pisar(
        ["run", f"{archive.static}/book-v3/manifest.json", "--name", "book", "-o", str(tmp_path / "iiif.jsonl"), *common], env, timeout=600
    )
    assert from_iiif.returncode == 0, from_iiif.stderr
    folder, iiif = read_jsonl(tmp_path / "folder.jsonl"), read_jsonl(tmp_path / "iiif.jsonl")
    assert len(iiif) == len(folder) == 2 * 44
    host = archive.static.removeprefix("http://").replace(":", "_")
    pages = {"a.jpg": f"{host}/book-v3/p0001.jpg", "b.png": f"{host}/book-v3/p0002.jpg"}
    by_key = {r["key"]: r for r in iiif}
    for record in folder:
        mine = by_key[record["key"].replace(record["page"], pages[record["page"]])]
        assert (mine["status"], mine["text"], mine["line_id"], mine["reading_order"]) == (
            record["status"],
            record["text"],
            record["line_id"],
            record["reading_order"],
        )
        assert mine["confidence"] == pytest.approx(record["confidence"], abs=1e-4)

    web = tmp_path / "web"
    exported = run_pisar(["export", "book", "--format", "annotations", "-o", str(web)], env)
    assert exported.returncode == 0, exported.stderr
    placed = {
        item["target"].split("#xywh=")[0]
        for page in (web / host / "book-v3").glob("p*.json")
        for item in json.loads(page.read_text())["items"]
    }
    assert placed == {f"{archive.static}/book-v3/canvas/1", f"{archive.static}/book-v3/canvas/2"}
    assert sum(len(json.loads(p.read_text())["items"]) for p in (web / host / "book-v3").glob("p*.json")) == 2 * 44


@pytest.mark.slow
def test_layout_files_from_a_folder_are_matched_to_canvases_that_link_none(
    archive: Archive, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    """`--layouts DIR`: each PAGE file goes to the canvas its image name names (here the canvas's label
    for one, its image service's identifier for the other); a file naming no canvas is left out."""
    base = archive.static
    items = [
        canvas_v3(f"{base}/bare/canvas/1", TRANSKRIBUS, archive.sizes["kraken"], f"{archive.images}/3.0_pil/kraken"),
        canvas_v3(f"{base}/bare/canvas/2", "second page", archive.sizes["pasted"], f"{archive.images}/3.0_pil/pasted"),
    ]
    write_json(archive.static_dir / "bare" / "manifest.json", manifest_v3(f"{base}/bare/manifest.json", "No layouts linked", items))
    layouts = tmp_path / "layouts"
    layouts.mkdir()
    (layouts / "0001.xml").write_bytes((archive.folder / f"{TRANSKRIBUS}.xml").read_bytes())  # names 170025120000003,0074.jpg
    (layouts / "0002.xml").write_bytes((archive.folder / "pasted.xml").read_bytes())  # names pasted.png
    (layouts / "stray.xml").write_bytes(page_xml("elsewhere.jpg", (100, 100), [("l1", rectangle(1, 1, 50, 20))]))
    env = _iiif_env(embedded_env)
    common = ["--layout", "xml", "--crop", "box", "--model", str(tiny_model), "--shard-size", "20"]
    ran = run_pisar(
        ["run", f"{base}/bare/manifest.json", "--layouts", str(layouts), "--name", "bare", "-o", str(tmp_path / "bare.jsonl"), *common],
        env,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    records = read_jsonl(tmp_path / "bare.jsonl")
    host = base.removeprefix("http://").replace(":", "_")
    assert {r["status"] for r in records} == {"ok"}
    assert (
        sum(r["page"] == f"{host}/bare/p0001.xml" for r in records) == 44
        and sum(r["page"] == f"{host}/bare/p0002.xml" for r in records) == 6
    )
    refused = run_pisar(["run", str(archive.folder), "--layouts", str(layouts), "--name", "nope", *common], env)
    assert refused.returncode != 0 and "--layouts matches layout files to IIIF canvases" in refused.stderr


def test_the_solr_core_indexes_ocr_text_from_the_miniocr_files() -> None:
    """infra/solr/pisar: the OCR field reads the file its value names (ExternalUtf8ContentFilter), keeps
    offsets with positions for the highlighter, and /select runs the OCR highlighting component."""
    from lxml import etree

    conf = Path(__file__).parents[1] / "infra" / "solr" / "pisar" / "conf"
    schema, config = etree.parse(str(conf / "schema.xml")), etree.parse(str(conf / "solrconfig.xml"))
    (ocr_type,) = schema.xpath("//fieldType[@name='text_ocr']")
    assert ocr_type.get("storeOffsetsWithPositions") == "true"
    assert ocr_type.xpath("analyzer[@type='index']/charFilter/@class") == [
        "solrocr.ExternalUtf8ContentFilterFactory",
        "solrocr.OcrCharFilterFactory",
    ]
    assert not ocr_type.xpath("analyzer[@type='query']/charFilter")
    fields = {f.get("name"): f for f in schema.xpath("//field")}
    assert fields["ocr_text"].get("type") == "text_ocr" and fields["ocr_text"].get("stored") == "true"
    assert {"id", "campaign", "manifest", "canvas", "image"} <= set(fields) and schema.xpath("string(//uniqueKey)") == "id"
    assert config.xpath("//searchComponent[@name='ocrHighlight']/@class") == ["solrocr.OcrHighlightComponent"]
    assert config.xpath("//requestHandler[@name='/select']/arr[@name='components']/str/text()") == ["query", "ocrHighlight", "highlight"]


def test_a_resumed_listing_reads_no_manifest_twice_and_goes_on_after_the_last_key(archive: Archive, tmp_path: Path) -> None:
    """`pisar resume` of a IIIF listing: recorded manifests are not fetched or recorded again, and the
    canvases' objects come again from just after the last key the interrupted listing wrote."""
    from pisar.catalog.db import ensure_ready
    from pisar.producer.submit import SubmitRequest, create_campaign
    from pisar.storage import KeyRange

    settings = Settings(catalog_path=tmp_path / "c.db", iiif_allow_networks=ARCHIVE_NETWORK)
    ensure_ready(settings.catalog_url, auto_upgrade=True)
    model = Path(__file__).parents[1] / "models" / "demo"
    request = SubmitRequest(f"{archive.static}/collection.json", str(model), "resumed", 20, "q", layout="xml")
    campaign, listed = create_campaign(settings, request)
    assert listed.keys == 2 * (44 + 6)
    storage = open_storage(campaign.source_url, settings, campaign.id)
    everything = [key for page in storage.list_range(KeyRange(""), None) for key in page]
    assert len(everything) == 8 and len(set(everything)) == 8  # 4 canvases, each its image and its layout
    after = everything[4]  # an interrupted listing wrote up to a canvas's image, not yet its layout
    assert [key for page in storage.list_range(KeyRange(""), after) for key in page] == everything[5:]
    assert storage.client.traffic.requests["manifest"] == 2  # the collection, walked again each time; no manifest
    with get_engine(settings.catalog_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(IiifManifest.__table__)).scalar_one() == 2


@pytest.mark.parametrize("catalog", ["sqlite", "postgres"])
def test_manifests_whose_server_is_down_wait_for_resume_while_the_rest_are_read(
    archive: Archive, tmp_path: Path, catalog: str, request: pytest.FixtureRequest
) -> None:
    """A list of four manifests, the last two on a host that answers 503: the first two are listed;
    the host is asked for one manifest only (its retries), the other is recorded unasked; the
    listing ends and says what is owed. Once the host is up, `pisar resume` asks again (even where
    the source no longer names them) and lists their canvases too, although their keys sort before
    every key listed already: nothing twice."""
    from rich.console import Console

    from pisar.catalog.canvases import UNANSWERED
    from pisar.catalog.db import ensure_ready
    from pisar.cli.status_view import status_view
    from pisar.producer.campaigns import find_campaign
    from pisar.producer.status import campaign_status
    from pisar.producer.submit import SubmitRequest, continue_listing, create_campaign, relist_unanswered

    where = {"catalog_path": tmp_path / "c.db"} if catalog == "sqlite" else {"database_url": request.getfixturevalue("postgres_url")}
    settings = Settings(**where, iiif_allow_networks=ARCHIVE_NETWORK, iiif_attempts=2)  # type: ignore[arg-type]
    ensure_ready(settings.catalog_url, auto_upgrade=True)
    server = Misbehaving(upstream=archive.static)
    try:
        urls = [
            f"{server.url}/up/book-v3/manifest.json",
            f"{server.url}/up/book-v2/manifest.json",
            f"{server.url}/down/a/book-v3/manifest.json",  # keyed .../down/a/book-v3/p0001: before .../up/...
            f"{server.url}/down/b/book-v2/manifest.json",
        ]
        listing = tmp_path / "manifests.txt"
        listing.write_text("\n".join(urls) + "\n")
        model = Path(__file__).parents[1] / "models" / "demo"
        campaign, listed = create_campaign(settings, SubmitRequest(str(listing), str(model), "owed", 20, "q", layout="xml"))
        assert listed.keys == 2 * (44 + 6)
        assert listed.unanswered.startswith(f"2 manifests did not answer, their pages not listed yet (first: {urls[2]}: ")
        assert "`pisar resume owed` asks them again" in listed.unanswered
        assert server.hits["/down/a/book-v3/manifest.json"] == 2  # its two attempts
        assert server.hits["/down/b/book-v2/manifest.json"] == 0  # the host is down: not asked again in this listing
        assert manifest_rows(settings) == [(urls[0], None), (urls[1], None), (urls[2], UNANSWERED), (urls[3], UNANSWERED)]
        screen = Console(width=400, record=True)
        screen.print(status_view(campaign_status(settings.catalog_url, campaign)))
        assert "did not answer: `pisar resume owed` asks them again" in screen.export_text()

        server.down = False
        listing.write_text("\n".join(urls[:2]) + "\n")  # the walk no longer reaches them (their collection down, say): still asked
        campaign = find_campaign(settings.catalog_url, "owed")
        assert relist_unanswered(settings, campaign)
        relisted = continue_listing(settings, campaign)
        assert relisted.keys == 4 * (44 + 6) and relisted.unanswered == ""
        assert [error for _, error in manifest_rows(settings)] == [None] * 4  # each in its place in the list
        with get_engine(settings.catalog_url).connect() as conn:
            keys = conn.execute(select(Line.key).where(Line.campaign_id == campaign.id)).scalars().all()
        assert len(keys) == len(set(keys)) == 4 * (44 + 6)
        late = {key.split("/p0", 1)[0] for key in keys if "/down/" in key}
        assert late == {f"127.0.0.3_{server.server_address[1]}/down/a/book-v3", f"127.0.0.3_{server.server_address[1]}/down/b/book-v2"}
        assert server.hits["/up/book-v3/manifest.json"] == 1  # the manifests read the first time are not asked again
        assert not relist_unanswered(settings, find_campaign(settings.catalog_url, "owed"))  # nothing owed any more
    finally:
        server.close()


@pytest.mark.slow
def test_pisar_run_again_reads_the_manifest_that_did_not_answer_the_first_run(
    archive: Archive, tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    """The same through the command line: the first run reads what answered and says what is owed,
    the second (the host up again) lists and reads the rest; every line once."""
    server = Misbehaving(upstream=archive.static)
    try:
        listing = tmp_path / "manifests.txt"
        listing.write_text(f"{server.url}/up/book-v3/manifest.json\n{server.url}/down/a/book-v2/manifest.json\n")
        env = {**_iiif_env(embedded_env), "PISAR_IIIF_ATTEMPTS": "2"}
        args = ["run", str(listing), "--name", "owed", "--layout", "xml", "--model", str(tiny_model), "--shard-size", "20"]
        first = run_pisar([*args, "-o", str(tmp_path / "first.jsonl")], env, timeout=600)
        assert first.returncode == 0, first.stderr
        assert "1 manifest did not answer, their pages not listed yet" in first.stdout + first.stderr
        assert len(read_jsonl(tmp_path / "first.jsonl")) == 44 + 6

        server.down = False
        second = run_pisar([*args, "-o", str(tmp_path / "second.jsonl")], env, timeout=600)
        assert second.returncode == 0, second.stderr
        assert "owed: listing finished: 100 lines" in second.stdout + second.stderr
        keys = [record["key"] for record in read_jsonl(tmp_path / "second.jsonl")]
        assert len(keys) == len(set(keys)) == 2 * (44 + 6)
        assert sum("/down/a/book-v2/" in key for key in keys) == 44 + 6
    finally:
        server.close()


def manifest_rows(settings: Settings) -> list[tuple[str, str | None]]:
    """(url, error class) of every manifest recorded, in the source's order."""
    table = IiifManifest.__table__
    with get_engine(settings.catalog_url).connect() as conn:
        return [tuple(row) for row in conn.execute(select(table.c.url, table.c.error_class).order_by(table.c.ordinal))]


def test_manifests_as_archives_write_them_are_read_whatever_their_shape() -> None:
    """Label language maps, a service given as a list, a string or v2's object, an ALTO file linked by
    ``rendering``, an image without a service, v2 collections listing manifests, and manifests embedded whole."""
    v3 = {
        "@context": ["http://www.w3.org/ns/anno.jsonld", "http://iiif.io/api/presentation/3/context.json"],
        "id": "https://a.example/m3",
        "type": "Manifest",
        "label": {"ru": ["Опись 1"], "en": ["Inventory 1"]},
        "items": [
            {
                "id": "https://a.example/c1",
                "type": "Canvas",
                "label": {"none": ["л. 1"]},
                "width": 2000,
                "height": 3000,
                "items": [
                    {
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "type": "Annotation",
                                "motivation": "painting",
                                "body": {
                                    "id": "https://img.example/1/full/max/0/default.jpg",
                                    "type": "Image",
                                    "service": [{"@id": "https://img.example/1", "@type": "ImageService2", "profile": "level2"}],
                                },
                            }
                        ],
                    }
                ],
                "rendering": [{"id": "https://a.example/alto/1.xml", "type": "Text", "format": "application/alto+xml"}],
            },
            {
                "id": "https://a.example/c2",
                "type": "Canvas",
                "items": [
                    {
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "type": "Annotation",
                                "motivation": "painting",
                                "body": {"id": "https://img.example/plain/2.jpg", "type": "Image"},
                            }
                        ],
                    }
                ],
                "seeAlso": [{"id": "https://a.example/about.html", "format": "text/html"}],
            },
        ],
    }
    manifest = read_document(json.dumps(v3).encode(), "https://a.example/m3", MB)
    assert isinstance(manifest, Manifest) and (manifest.version, manifest.label) == (3, "Опись 1")
    first, second = manifest.canvases
    assert (first.label, first.width, first.service, first.service_version, first.layout) == (
        "л. 1",
        2000,
        "https://img.example/1",
        2,
        "https://a.example/alto/1.xml",
    )
    assert (second.service, second.image, second.layout, second.width) == (None, "https://img.example/plain/2.jpg", None, None)
    v2 = {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": "https://a.example/top",
        "@type": "sc:Collection",
        "collections": [{"@id": "https://a.example/sub", "@type": "sc:Collection"}],
        "manifests": [
            {"@id": "https://a.example/m1", "@type": "sc:Manifest"},
            {
                "@id": "https://a.example/m2",
                "@type": "sc:Manifest",
                "label": "whole",
                "sequences": [
                    {
                        "canvases": [
                            {
                                "@id": "https://a.example/m2/c1",
                                "images": [
                                    {
                                        "resource": {
                                            "@id": "https://img.example/9/full/full/0/default.jpg",
                                            "service": "https://img.example/9/info.json",
                                        }
                                    }
                                ],
                            }
                        ]
                    }
                ],
            },
        ],
    }
    collection = read_document(json.dumps(v2).encode(), "https://a.example/top", MB)
    assert isinstance(collection, Collection) and collection.members == ["https://a.example/sub", "https://a.example/m1"]
    (embedded,) = collection.embedded
    assert embedded.canvases[0].service == "https://img.example/9" and embedded.canvases[0].service_version == 2
    with pytest.raises(UnreadableManifest, match="neither a Manifest nor a Collection"):
        read_document(b'{"type": "Canvas", "id": "x"}', "x", MB)
    with pytest.raises(UnreadableManifest, match="not a IIIF manifest"):
        read_document(b"[1, 2]", "x", MB)


def test_a_manifest_that_cannot_be_had_is_one_readable_line(embedded_env: dict[str, str], tmp_path: Path) -> None:
    """No traceback: a host that does not resolve stops the listing (resumable), a forbidden one leaves nothing to read."""
    model = str(Path(__file__).parents[1] / "models" / "demo")
    unresolvable = run_pisar(
        ["run", "https://iiif.invalid/book/manifest.json", "--layout", "xml", "--model", model, "-o", str(tmp_path / "a.jsonl")],
        embedded_env,
    )
    assert_one_line_error(unresolvable, "cannot resolve iiif.invalid")
    forbidden = run_pisar(
        ["run", "http://169.254.169.254/manifest.json", "--layout", "xml", "--model", model, "-o", str(tmp_path / "b.jsonl")], embedded_env
    )
    assert_one_line_error(forbidden, "ForbiddenAddress: 169.254.169.254 resolves to 169.254.169.254, a link-local address")
    listing = tmp_path / "list.txt"
    listing.write_text("https://a.example/m.json\n/etc/passwd\n")
    refused = run_pisar(["run", str(listing), "--layout", "xml", "--model", model, "-o", str(tmp_path / "c.jsonl")], embedded_env)
    assert_one_line_error(refused, "line 2: '/etc/passwd' is not a manifest URL")
    training = run_pisar(["train", str(listing), "-o", str(tmp_path / "model"), "--steps", "1"], embedded_env)  # line images only
    assert_one_line_error(training, "is a IIIF source: read it with `pisar run` or `pisar submit`")
