"""Object keys are data, never paths or markup: odd names are read, stored and exported exactly,
shown harmlessly, and a name that points outside the source is refused, in local and S3 mode."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from pisar.csv_cells import restore
from pisar.errors import LineError
from pisar.s3_storage import S3Storage
from pisar.settings import Settings
from pisar.storage import UNSTORABLE_KEY, list_images
from tests.helpers.cli import run_pisar

pytestmark = pytest.mark.slow

ESC = "\x1b"
# Each is a legal file name on Linux and a legal S3 key; each would do harm if used as a path,
# printed raw to a terminal or log, read as rich markup, or split as a JSON line.
ODD_NAMES = [
    "line\nforged log entry.png",
    f"clear-screen{ESC}[2J{ESC}[H.png",
    "tab\tand\rreturn.png",
    "[blink]markup [link=x]click.png",  # rich markup; closing tags would need a slash
    "line\u2028separator\u0085next.png",
    "кириллица ё.png",
    "'; DROP TABLE line; --.png",
    '=HYPERLINK("x") formula.png',  # a spreadsheet formula in a CSV cell
]


def test_odd_local_names_are_read_stored_and_exported_exactly(
    tiny_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    source, outside = tmp_path / "archive", tmp_path / "outside.png"
    source.mkdir()
    scans = sorted(print_lines.glob("*.png"))
    for name, scan in zip(ODD_NAMES, scans, strict=False):
        (source / name).write_bytes(scan.read_bytes())
    outside.write_bytes(scans[-1].read_bytes())
    (source / "escape.png").symlink_to(outside)  # inside the folder by name, outside by target
    with open(os.fsencode(source) + b"/latin1-\xe9.png", "wb") as handle:  # not UTF-8: no catalog can key it
        handle.write(scans[0].read_bytes())

    out = tmp_path / "r.jsonl"
    args = ["run", str(source), "--model", str(tiny_model), "--name", "odd", "-o", str(out), "--show", "20"]
    run = run_pisar(args, embedded_env)
    assert run.returncode == 0, run.stderr
    assert f"1 {UNSTORABLE_KEY}" in run.stderr  # counted and said, not a failed submit
    for raw in (ESC, "\u2028", "\u0085", "\r"):  # the table shows escapes, never acts on them
        assert raw not in run.stdout, repr(raw)
    assert "line\\nforged log entry.png" in run.stdout and "clear-screen\\x1b[2J" in run.stdout
    assert "[blink]markup [link=x]click.png" in run.stdout  # shown as text, not taken as markup

    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(ODD_NAMES) + 1 == len(out.read_text(encoding="utf-8").splitlines())  # one record, one line
    records = {r["key"]: r for r in map(json.loads, lines)}
    assert set(records) == {*ODD_NAMES, "escape.png"}  # byte-exact keys
    assert all(records[name]["status"] == "ok" for name in ODD_NAMES)
    assert (records["escape.png"]["status"], records["escape.png"]["error_class"]) == ("error", "MissingObject")
    assert "outside the source folder" in records["escape.png"]["error"]

    csv_out = tmp_path / "r.csv"
    exported = run_pisar(["export", "odd", "--format", "csv", "-o", str(csv_out)], embedded_env)
    assert exported.returncode == 0, exported.stderr
    with csv_out.open(encoding="utf-8", newline="") as handle:  # newline="": a \r inside a quoted cell stays a \r
        rows = list(csv.DictReader(handle))
    assert [restore(r["key"]) for r in rows] == sorted(records)  # exact, once a formula-guarding quote is taken off
    assert all(r["key"][0] not in "=+-@\t\r" for r in rows)

    status = run_pisar(["status", "odd"], embedded_env)
    assert status.returncode == 0 and ESC not in status.stdout, status.stdout


def test_odd_s3_keys_list_and_read_exactly(s3, seaweedfs, print_lines: Path) -> None:
    scan = sorted(print_lines.glob("*.png"))[0].read_bytes()
    keys = {f"vol/{name}" for name in [*ODD_NAMES, "del\x7fand\x01soh.png"]}
    s3.create_bucket(Bucket="odd-keys")
    for key in keys:
        s3.put_object(Bucket="odd-keys", Key=key, Body=scan)
    s3.put_object(Bucket="odd-keys", Key="secret.png", Body=b"not under the campaign's prefix")
    storage = S3Storage("odd-keys", "vol/", Settings(s3_endpoint_url=seaweedfs.url))
    listed = list_images(storage).keys
    assert set(listed) == keys  # listed byte-exact (botocore's url encoding-type carries control characters)
    for key in listed:
        assert storage.read(key) == scan, key
    # A key is sent as a key, never resolved as a path: a dot-segment key does not reach another object.
    with pytest.raises(LineError):
        storage.read("vol/../secret.png")
