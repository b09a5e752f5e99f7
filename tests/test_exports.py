"""`pisar export` in every format against a real Postgres catalog, the XML ones checked against the official XSDs.

The campaign is real: the demo model reads real print lines laid out in page folders (Cyrillic,
spaces, a dot-dot name) with one corrupt file, through `pisar run`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image
from sqlalchemy import create_engine, text

from infra.local_services import Service, throwaway_database, unconfigured_env
from pisar.producer.export_pages import file_for
from pisar.words import words
from tests.helpers.cli import run_pisar
from tests.helpers.paths import DEMO_MODEL, SCHEMAS

ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
FOLDERS = ("fond 1/опись 2/лист_001", "fond 1/опись 2/лист_001/вклейка", "fond 1/опись 2/лист_002", "up..dir", "")


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    return {
        "alto": etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd"))),
        "page": etree.XMLSchema(etree.parse(str(SCHEMAS / "pagecontent-2019-07-15.xsd"))),
    }


@pytest.fixture(scope="module")
def campaign(print_lines: Path, postgres_server: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A finished campaign `pages` on Postgres: 5 lines in each folder plus one corrupt file; yields the env.

    Built once for the module; a test that changes it puts it back.
    """
    root = tmp_path_factory.mktemp("pages")
    source = root / "source"
    lines = sorted(print_lines.glob("*.png"))
    for number, folder in enumerate(FOLDERS):
        target = source / folder
        target.mkdir(parents=True, exist_ok=True)
        for index, line in enumerate(lines[number * 5 : number * 5 + 5]):
            shutil.copy(line, target / f"line_{index:02d}.png")
    (source / "fond 1" / "опись 2" / "лист_002" / "line_99.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with throwaway_database(postgres_server) as url:
        env = unconfigured_env()
        env.update({"PISAR_DATABASE_URL": url, "PISAR_TORCH_THREADS": "2", "SOURCE": str(source)})
        ran = run_pisar(["run", str(source), "--model", str(DEMO_MODEL), "--name", "pages", "-o", str(root / "r.jsonl")], env)
        assert ran.returncode == 0, ran.stderr
        yield env


def export(env: dict[str, str], *args: str) -> str:
    done = run_pisar(["export", "pages", *args], env)
    assert done.returncode == 0, done.stderr
    return done.stderr


def records(env: dict[str, str], tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "all.jsonl"
    export(env, "-o", str(out), *args)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_alto_and_page_files_per_folder_validate_and_hold_every_line(
    campaign: dict[str, str], schemas: dict[str, etree.XMLSchema], print_lines: Path, tmp_path: Path
) -> None:
    every = records(campaign, tmp_path)
    ok = [r for r in every if r["status"] == "ok"]
    assert len(every) == 26 and len(ok) == 25
    by_key = {r["key"]: r for r in ok}
    assert all(len(r["word_confidences"]) == len(words(r["text"])) for r in ok), "one confidence per word"
    for fmt in ("alto", "page"):
        out = tmp_path / fmt
        said = export(campaign, "--format", fmt, "-o", str(out))
        assert "25 lines written" in said and "in 5 files" in said and "1 error lines left out" in said
        files = sorted(out.rglob("*.xml"))
        assert len(files) == 5
        seen: list[str] = []
        for path in files:
            document = etree.parse(str(path))
            assert schemas[fmt].validate(document), f"{path}: {schemas[fmt].error_log.last_error}"
            keys, texts, confs, heights = read_lines(document, fmt)
            assert keys == sorted(keys), "lines in key order"
            assert all(file_for(out, k.rpartition("/")[0], ".xml") == path for k in keys), "one file per source folder"
            for key, got, conf, height in zip(keys, texts, confs, heights, strict=True):
                assert got == " ".join((by_key[key]["text"] or "").split())
                line = by_key[key]
                expected = [line["confidence"]] if fmt == "page" else line["word_confidences"] or [line["confidence"]]
                assert conf == pytest.approx(expected, abs=1e-4)  # ALTO: each word's own WC; an empty reading, the line's
                assert height == by_key[key]["height"]
            seen += keys
        assert sorted(seen) == sorted(by_key), "every ok line exactly once"
    assert (tmp_path / "page" / "fond 1" / "опись 2" / "лист_001" / "вклейка.xml").exists()
    assert (tmp_path / "page" / "_root.xml").exists()


def read_lines(document: etree._ElementTree, fmt: str) -> tuple[list[str], list[str], list[list[float]], list[int]]:
    """Keys, texts, confidences (PAGE: the line's; ALTO: each word's) and heights of a file's lines, as an archive system reads them."""
    if fmt == "page":
        lines = document.iter(f"{PAGE}TextLine")
        rows = [
            (
                line.find(f"{PAGE}UserDefined/{PAGE}UserAttribute").get("value"),
                line.findtext(f"{PAGE}TextEquiv/{PAGE}Unicode"),
                [float(line.find(f"{PAGE}TextEquiv").get("conf"))],
                _height(line.find(f"{PAGE}Coords").get("points")),
            )
            for line in lines
        ]
    else:
        tags = {tag.get("ID"): tag.get("DESCRIPTION") for tag in document.iter(f"{ALTO}OtherTag")}
        rows = [
            (
                tags[line.get("TAGREFS")],
                " ".join(s.get("CONTENT") for s in line.iter(f"{ALTO}String")),
                [float(s.get("WC")) for s in line.iter(f"{ALTO}String")],
                int(line.get("HEIGHT")),
            )
            for line in document.iter(f"{ALTO}TextLine")
        ]
    return tuple(list(column) for column in zip(*rows, strict=True))  # type: ignore[return-value]


def _height(points: str) -> int:
    ys = [int(p.split(",")[1]) for p in points.split()]
    return max(ys) - min(ys)


def test_geometry_is_each_line_image_size(campaign: dict[str, str], tmp_path: Path) -> None:
    """``line.width``/``height`` are the decoded image's size; ALTO and PAGE stack the lines at that size."""
    for record in records(campaign, tmp_path, "--status", "ok"):
        assert (record["width"], record["height"]) == Image.open(Path(campaign["SOURCE"]) / record["key"]).size


def test_forbidden_xml_characters_are_replaced_and_reported(
    campaign: dict[str, str], schemas: dict[str, etree.XMLSchema], tmp_path: Path
) -> None:
    """A byte-level tokenizer can emit control characters; the XML stays valid and the operator is told."""
    engine = create_engine(campaign["PISAR_DATABASE_URL"])
    with engine.begin() as conn:
        key, kept = conn.execute(text("SELECT key, text FROM line WHERE status = 'ok' ORDER BY key COLLATE \"C\" LIMIT 1")).one()
        conn.execute(text("UPDATE line SET text = :bad WHERE key = :key"), {"bad": "bad \x01 text \x0b end", "key": key})
    try:
        for fmt in ("alto", "page"):
            said = export(campaign, "--format", fmt, "-o", str(tmp_path / fmt))
            assert "replaced 2 characters XML cannot hold with U+FFFD in 1 values" in said
            for path in (tmp_path / fmt).rglob("*.xml"):
                assert schemas[fmt].validate(etree.parse(str(path))), schemas[fmt].error_log.last_error
        assert "bad \x01 text \x0b end" in [r["text"] for r in records(campaign, tmp_path)], "JSONL keeps the text exactly"
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE line SET text = :kept WHERE key = :key"), {"kept": kept, "key": key})
        engine.dispose()


def test_parquet_holds_the_same_records_as_jsonl(campaign: dict[str, str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "all.parquet"
    export(campaign, "--format", "parquet", "-o", str(out))
    table = pq.read_table(out)
    rows = table.to_pylist()
    expected = records(campaign, tmp_path)
    assert [r["key"] for r in rows] == [r["key"] for r in expected]
    for row, record in zip(rows, expected, strict=True):
        row["finished_at"] = row["finished_at"].isoformat()
        assert row == record
    assert str(table.schema.field("confidence").type) == "double" and str(table.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"


def test_text_export_is_one_line_per_image_per_folder(campaign: dict[str, str], tmp_path: Path) -> None:
    export(campaign, "--format", "txt", "-o", str(tmp_path / "txt"))
    ok = [r for r in records(campaign, tmp_path) if r["status"] == "ok"]
    path = file_for(tmp_path / "txt", "fond 1/опись 2/лист_002", ".txt")
    expected = [r["text"] for r in ok if r["key"].rpartition("/")[0] == "fond 1/опись 2/лист_002"]
    assert path.read_text(encoding="utf-8").splitlines() == expected and len(expected) == 5


def test_filters_select_by_status_confidence_and_time(campaign: dict[str, str], tmp_path: Path) -> None:
    every = records(campaign, tmp_path)
    assert [r["key"] for r in records(campaign, tmp_path, "--status", "error")] == ["fond 1/опись 2/лист_002/line_99.png"]
    confident = records(campaign, tmp_path, "--min-confidence", "0.99")
    assert confident == [r for r in every if r["confidence"] is not None and r["confidence"] >= 0.99]
    assert 0 < len(confident) < len(every)
    assert records(campaign, tmp_path, "--since", "2999-01-01") == []
    assert len(records(campaign, tmp_path, "--since", "2000-01-01T00:00+02:00")) == len(every)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "docx"], "unknown export format 'docx'"),
        (["--format", "alto"], "writes one file per source folder: give a folder with -o"),
        (["--status", "pending"], "--status takes ok and/or error, not pending"),
        (["--min-confidence", "2"], "--min-confidence must be between 0 and 1"),
        (["--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_bad_export_arguments_are_one_readable_line(campaign: dict[str, str], args: list[str], message: str) -> None:
    done = run_pisar(["export", "pages", *args], campaign)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_folder_names_from_keys_cannot_leave_the_output_folder(tmp_path: Path) -> None:
    for folder in ("..", "a/../..", "/abs", "a/./b", "c:\\x", "new\nline"):
        path = file_for(tmp_path, folder, ".xml").resolve()
        assert path.is_relative_to(tmp_path.resolve()), folder
    assert file_for(tmp_path, "fond 1/опись", ".xml") == tmp_path / "fond 1" / "опись.xml"


def test_an_output_path_that_cannot_be_written_is_one_line(campaign: dict[str, str], tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("keep me")
    for args in (["--format", "alto", "-o", str(taken)], ["--format", "parquet", "-o", str(tmp_path)]):
        done = run_pisar(["export", "pages", *args], campaign)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "pisar: error:" in done.stderr
    assert taken.read_text() == "keep me"
