"""Page campaigns (`--layout xml`): PAGE files listed into one catalog line per TextLine, shards that follow
pages, lines cut from the scans by the worker; a page of pasted real lines reads exactly as the same
lines do as line images; bad pages are recorded lines, in embedded and in distributed mode."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image
from sqlalchemy import select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Line
from pisar.layout import read_layout
from pisar.producer.export_pages import ALTO_NS, PAGE_NS
from pisar.settings import Settings
from pisar.words import words
from tests.helpers.cli import read_jsonl, run_pisar, wait_until
from tests.helpers.pages import page_schema, page_xml, pasted_page, rectangle
from tests.helpers.paths import SCHEMAS

pytestmark = pytest.mark.slow

TRANSKRIBUS = "170025120000003,0074"


@pytest.fixture
def page_folder(tmp_path: Path, print_lines: Path, kraken_page: Path) -> tuple[Path, list[Path]]:
    """The Transkribus page and its scan, a page of 12 pasted real lines, a broken layout and one without lines."""
    folder = tmp_path / "pages"
    (folder / "kraken").mkdir(parents=True)
    for suffix in (".xml", ".jpg"):
        (folder / "kraken" / f"{TRANSKRIBUS}{suffix}").write_bytes((kraken_page / f"{TRANSKRIBUS}{suffix}").read_bytes())
    paths = [p for p in sorted(print_lines.glob("*.png")) if Image.open(p).width < 2300][:12]
    canvas, placed = pasted_page(paths, seed=5)
    canvas.save(folder / "pasted.png")
    lines = [(f"l{n:02d}", rectangle(left, top, *Image.open(path).size)) for n, (path, (left, top)) in enumerate(placed)]
    (folder / "pasted.xml").write_bytes(page_xml("pasted.png", canvas.size, lines))
    (folder / "broken.xml").write_bytes(b"<PcGts")
    (folder / "empty.xml").write_bytes(page_xml("pasted.png", canvas.size, []))
    return folder, paths


def test_pages_in_embedded_mode_read_every_line_and_keep_pages_whole(
    page_folder: tuple[Path, list[Path]], tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    folder, paths = page_folder
    out = tmp_path / "pages.jsonl"
    args = ["run", str(folder), "--layout", "xml", "--crop", "box", "--model", str(tiny_model), "--shard-size", "20", "-o", str(out)]
    ran = run_pisar(args, embedded_env, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "57 lines" in ran.stderr and "(a layout without lines)" in ran.stderr  # 44 + 12 + the broken file's one
    records = {r["key"]: r for r in read_jsonl(out)}
    assert len(records) == 57
    broken = records["broken.xml#"]
    assert (broken["status"], broken["error_class"]) == ("error", "UnreadableLayout")
    ok = {k: r for k, r in records.items() if k != "broken.xml#"}
    assert {r["status"] for r in ok.values()} == {"ok"}
    assert sum(k.startswith(f"kraken/{TRANSKRIBUS}.xml#") for k in ok) == 44 and sum(k.startswith("pasted.xml#l") for k in ok) == 12

    # Each record says where its line sits: the page, the TextLine and its region, the scan, the reading order.
    assert (broken["page"], broken["line_id"], broken["region_id"], broken["image"]) == ("broken.xml", None, None, None)
    for name, scan in ((f"kraken/{TRANSKRIBUS}.xml", f"kraken/{TRANSKRIBUS}.jpg"), ("pasted.xml", "pasted.png")):
        for line in read_layout((folder / name).read_bytes()).lines:
            record = records[f"{name}#{line.line_id}"]
            assert (record["page"], record["line_id"], record["region_id"]) == (name, line.line_id, line.region_id)
            assert (record["image"], record["reading_order"]) == (scan, line.order)
            assert len(record["word_confidences"]) == len(words(record["text"]))
            assert all(0 < c <= 1 for c in record["word_confidences"])

    engine = get_engine(Settings(catalog_path=embedded_env["PISAR_CATALOG_PATH"]).catalog_url)
    with engine.connect() as conn:
        campaign = conn.execute(select(Campaign.__table__)).one()
        rows = conn.execute(select(Line.__table__.c.key, Line.__table__.c.shard_id)).all()
    assert (campaign.layout, campaign.crop) == ("xml", "box")
    shards_of = defaultdict(set)
    for key, shard_id in rows:
        shards_of[key.rpartition("#")[0]].add(shard_id)
    assert len(shards_of["pasted.xml"]) == 1  # 12 lines: never split
    assert len(shards_of[f"kraken/{TRANSKRIBUS}.xml"]) == 3  # 44 lines in shards of 20: the page alone fills two

    # Written back into the PAGE files: valid PAGE 2019, every id, Coords, Baseline and the reading order kept, the readings in.
    pages_out = tmp_path / "written"
    exported = run_pisar(["export", "pages", "--format", "page", "-o", str(pages_out)], embedded_env)
    assert exported.returncode == 0, exported.stderr
    assert "56 lines written" in exported.stderr and "2 files" in exported.stderr
    assert "1 layout files left out (broken.xml:" in exported.stderr and "1 error lines" in exported.stderr
    schema = page_schema()
    for name in (f"kraken/{TRANSKRIBUS}.xml", "pasted.xml"):
        written = (pages_out / name).read_bytes()
        assert schema.validate(etree.fromstring(written)), f"{name}: {schema.error_log.last_error}"
        before, after = read_layout((folder / name).read_bytes()), read_layout(written)
        assert after.version == "2019-07-15" and after.image == before.image
        assert [(x.line_id, x.region_id, x.order, x.polygon, x.baseline) for x in after.lines] == [
            (x.line_id, x.region_id, x.order, x.polygon, x.baseline) for x in before.lines
        ]
        layout_key = name
        assert [x.text for x in after.lines] == [records[f"{layout_key}#{x.line_id}"]["text"] for x in after.lines]
        confs = etree.fromstring(written).xpath("//p:TextLine/p:TextEquiv/@conf", namespaces={"p": PAGE_NS})
        assert confs == [f"{records[f'{layout_key}#{x.line_id}']['confidence']:.4f}" for x in after.lines]
        for line in etree.fromstring(written).iterfind(".//p:TextLine", namespaces={"p": PAGE_NS}):  # a Word per word, its own conf
            record = records[f"{layout_key}#{line.get('id')}"]
            found = line.findall("p:Word", namespaces={"p": PAGE_NS})
            assert [w.findtext("p:TextEquiv/p:Unicode", namespaces={"p": PAGE_NS}) for w in found] == words(record["text"])
            assert [w.find("p:TextEquiv", namespaces={"p": PAGE_NS}).get("conf") for w in found] == [
                f"{c:.4f}" for c in record["word_confidences"]
            ]
            line_points = line.find("p:Coords", namespaces={"p": PAGE_NS}).get("points")
            assert {w.find("p:Coords", namespaces={"p": PAGE_NS}).get("points") for w in found} <= {line_points}  # the line's box
    kraken = etree.fromstring((pages_out / f"kraken/{TRANSKRIBUS}.xml").read_bytes())
    assert kraken.xpath("count(//p:ReadingOrder//p:RegionRefIndexed)", namespaces={"p": PAGE_NS}) == 4
    assert kraken.xpath("//p:MetadataItem/@type", namespaces={"p": PAGE_NS}) == ["processingStep"]
    assert kraken.xpath("count(//p:TextLine[@custom])", namespaces={"p": PAGE_NS}) == 44  # Transkribus' own attributes kept

    # As ALTO 4.4: valid, each region a TextBlock and each TextLine with its id, box, polygon and baseline, the words as Strings.
    alto_out = tmp_path / "alto"
    exported = run_pisar(["export", "pages", "--format", "alto", "-o", str(alto_out)], embedded_env)
    assert exported.returncode == 0, exported.stderr
    assert "56 lines written" in exported.stderr and "2 files" in exported.stderr
    alto_schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd")))
    for name in (f"kraken/{TRANSKRIBUS}.xml", "pasted.xml"):
        written = (alto_out / name).read_bytes()
        assert alto_schema.validate(etree.fromstring(written)), f"{name}: {alto_schema.error_log.last_error}"
        before, after = read_layout((folder / name).read_bytes()), read_layout(written)
        assert after.format == "alto" and (after.image, after.width, after.height) == (before.image, before.width, before.height)
        assert [(x.line_id, x.region_id, x.polygon, x.baseline) for x in after.lines] == [
            (x.line_id, x.region_id, x.polygon, x.baseline) for x in before.lines
        ]
        assert [x.text for x in after.lines] == [" ".join(records[f"{name}#{x.line_id}"]["text"].split()) for x in after.lines]
        for line in etree.fromstring(written).iter(f"{{{ALTO_NS}}}TextLine"):  # WC per word, the word's own
            record = records[f"{name}#{line.get('ID')}"]
            expected = [f"{c:.4f}" for c in record["word_confidences"]] or [f"{record['confidence']:.4f}"]
            assert [s.get("WC") for s in line.iter(f"{{{ALTO_NS}}}String")] == expected

    # The ground truth the Transkribus file carries is a test set as it is: 44 lines scored, the 13 others have none.
    evaluated = run_pisar(["eval", "pages", "--gt-from-xml", "-o", str(tmp_path / "eval")], embedded_env)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout)
    assert (summary["lines_scored"], summary["cer"] > 0) == (44, True)
    assert "44 lines scored (13 without ground truth)" in evaluated.stderr
    scored = {row["key"] for row in csv.DictReader((tmp_path / "eval" / "lines.csv").open(encoding="utf-8"))}
    assert scored == {k for k in ok if k.startswith("kraken/")}

    # The pasted page read in page mode equals its 12 real lines read as line images (a box crop gives each back exactly).
    lines = tmp_path / "lines"
    lines.mkdir()
    for n, path in enumerate(paths):
        (lines / f"l{n:02d}.png").write_bytes(path.read_bytes())
    as_lines = tmp_path / "lines.jsonl"
    ran = run_pisar(["run", str(lines), "--model", str(tiny_model), "--name", "lines", "-o", str(as_lines)], embedded_env, timeout=600)
    assert ran.returncode == 0, ran.stderr
    line_records = read_jsonl(as_lines)
    assert {(r["page"], r["line_id"], r["region_id"], r["image"], r["reading_order"]) for r in line_records} == {(None,) * 5}
    line_texts = {r["key"].removesuffix(".png"): (r["text"], r["confidence"], r["word_confidences"]) for r in line_records}
    page_texts = {
        k.removeprefix("pasted.xml#"): (r["text"], r["confidence"], r["word_confidences"])
        for k, r in ok.items()
        if k.startswith("pasted.xml#")
    }
    assert page_texts == line_texts


def test_a_page_campaign_runs_on_workers_from_s3(
    s3, distributed_env: dict[str, str], start_worker, tiny_model: Path, page_folder: tuple[Path, list[Path]]
) -> None:
    folder, _ = page_folder
    s3.create_bucket(Bucket="pages")
    for path in folder.rglob("*"):
        if path.is_file():
            s3.put_object(Bucket="pages", Key=f"vol/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())
    args = ["submit", "s3://pages/vol", "--layout", "xml", "--model", str(tiny_model), "--name", "pages", "--shard-size", "64"]
    submitted = run_pisar(args, distributed_env)
    assert submitted.returncode == 0, submitted.stderr
    assert "57 lines in 2 shards" in submitted.stderr  # kraken/ and the top level are key ranges of their own
    start_worker(distributed_env, "pages")
    engine = get_engine(Settings(database_url=distributed_env["PISAR_DATABASE_URL"]).catalog_url)

    def statuses() -> dict[str, str]:
        with engine.connect() as conn:
            return dict(conn.execute(select(Line.__table__.c.key, Line.__table__.c.status)).all())

    wait_until(lambda: "pending" not in statuses().values(), 300, "every page line read")
    got = statuses()
    assert len(got) == 57 and got.pop("vol/broken.xml#") == "error" and set(got.values()) == {"ok"}
    with engine.connect() as conn:  # the worker's COPY into Postgres carries each line's place and word confidences
        table = Line.__table__.c
        placed = conn.execute(
            select(table.key, table.region_id, table.image, table.reading_order, table.word_confidences, table.text)
        ).all()
    layout = read_layout((folder / "pasted.xml").read_bytes())
    orders = {f"vol/pasted.xml#{line.line_id}": (line.region_id, line.order) for line in layout.lines}
    pasted = [row for row in placed if row[0] in orders]
    assert len(pasted) == 12
    for key, region_id, image, order, per_word, text in pasted:
        region, place = orders[key]
        assert (region_id, image, order) == (region, "vol/pasted.png", place)
        assert len(per_word.split()) == len(words(text))
