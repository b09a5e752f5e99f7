"""`pisar run` on a local folder: all lines, resumable, and the same catalog commands work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import read_jsonl, run_pisar
from tests.helpers.paths import lines_folder

pytestmark = pytest.mark.slow


def test_run_twice_resumes_without_inference(tiny_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    """150 real lines with their ground-truth files beside them (skipped as such), in two shards of 100."""
    source = tmp_path / "print"
    source.mkdir()
    for path in sorted(print_lines.glob("*.png"))[:150]:
        for kept in print_lines.glob(f"{path.name.split('.')[0]}.*"):  # the line and its NAME.gt.txt
            (source / kept.name).write_bytes(kept.read_bytes())  # copies: a folder source does not follow links out of it
    out = tmp_path / "results.jsonl"
    args = ["run", str(source), "--model", str(tiny_model), "--name", "print", "--shard-size", "100", "-o", str(out)]
    first = run_pisar(args, embedded_env, timeout=600)
    assert first.returncode == 0, first.stderr
    records = read_jsonl(out)
    assert len(records) == 150
    assert {r["status"] for r in records} == {"ok"}
    assert [r["key"] for r in records] == sorted(p.name for p in source.glob("*.png"))
    assert "recognized 150 lines now" in first.stderr

    second = run_pisar(args, embedded_env)
    assert second.returncode == 0, second.stderr
    assert "recognized 0 lines now" in second.stderr
    assert read_jsonl(out) == records

    status = run_pisar(["status", "print", "--json"], embedded_env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["lines"] == {"pending": 0, "ok": 150, "error": 0}
    assert report["shards"]["done"] == 2

    csv_out = tmp_path / "results.csv"
    exported = run_pisar(["export", "print", "--format", "csv", "-o", str(csv_out)], embedded_env)
    assert exported.returncode == 0, exported.stderr
    assert len(csv_out.read_text(encoding="utf-8").splitlines()) == 151


def test_embedded_retry_reruns_errored_lines_in_process(
    tiny_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    source = lines_folder(tmp_path, print_lines, 10)
    (source / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "r.jsonl"
    run = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "small", "-o", str(out), "--shard-size", "4"], embedded_env)
    assert run.returncode == 0, run.stderr
    broken = [r for r in read_jsonl(out) if r["key"] == "broken.png"]
    assert broken[0]["status"] == "error" and broken[0]["error_class"] == "NotAnImage"

    (source / "broken.png").write_bytes(sorted(print_lines.glob("*.png"))[20].read_bytes())  # an operator fixes the file
    retry = run_pisar(["retry", "small", "--errors", "NotAnImage"], embedded_env)
    assert retry.returncode == 0, retry.stderr
    assert "re-running 1 lines in 1 shards" in retry.stderr
    exported = run_pisar(["export", "small", "-o", str(out)], embedded_env)
    assert exported.returncode == 0, exported.stderr
    records = read_jsonl(out)
    assert len(records) == 11 and {r["status"] for r in records} == {"ok"}


def test_changed_model_folder_is_refused_as_this_nodes_fault(
    tiny_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    """Provenance holds: a model folder edited after submit is not the campaign's model, so this node
    cannot serve the campaign: the command exits 3 saying why, the shard goes back unspent (nothing
    failed or quarantined, since another node's copy may be right), earlier results are kept."""
    import shutil

    model = shutil.copytree(tiny_model, tmp_path / "model")
    source = lines_folder(tmp_path, print_lines, 3)
    (source / "broken.png").write_bytes(b"")
    env = {**embedded_env, "PISAR_MAX_ATTEMPTS": "2"}
    out = tmp_path / "r.jsonl"
    first = run_pisar(["run", str(source), "--model", str(model), "--name", "prov", "-o", str(out)], env)
    assert first.returncode == 0, first.stderr

    (model / "README.md").write_text("edited after submit\n")
    retried = run_pisar(["retry", "prov"], env)
    assert retried.returncode == 3, retried.stderr
    assert "pisar: error: model folder" in retried.stderr and "changed since submit" in retried.stderr
    report = json.loads(run_pisar(["status", "prov", "--json"], env).stdout)
    assert report["shards"].get("quarantined", 0) == report["shards"].get("failed", 0) == 0
    assert report["lines"] == {"pending": 0, "ok": 3, "error": 1}  # earlier results are kept
    assert not report["shard_errors"]


def test_run_on_an_s3_prefix(s3, seaweedfs, tiny_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    """Embedded mode reads from object storage too; keys are the full object keys."""
    s3.create_bucket(Bucket="embedded")
    files = sorted(print_lines.iterdir())[:20]  # 10 images and their .gt.txt files
    for path in files:
        s3.put_object(Bucket="embedded", Key=f"fond-1/{path.name}", Body=path.read_bytes())
    out = tmp_path / "r.jsonl"
    result = run_pisar(["run", "s3://embedded/fond-1/", "--model", str(tiny_model), "-o", str(out)], {**embedded_env, **seaweedfs.env})
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert [r["key"] for r in records] == sorted(f"fond-1/{p.name}" for p in files if p.suffix == ".png")
    assert {r["status"] for r in records} == {"ok"}
    assert "campaign embedded-fond-1:" in result.stderr  # the default name comes from the URL


def test_image_pixel_limit_setting_applies_in_embedded_mode(tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    """PISAR_MAX_IMAGE_PIXELS is the limit, also for PIL's own global check (144 M pixels here)."""
    from tests.helpers.hostile import hostile_files

    bomb, _ = hostile_files(Path(__file__))["bomb.png"]
    source = tmp_path / "lines"
    source.mkdir()
    (source / "big.png").write_bytes(bomb)
    out = tmp_path / "r.jsonl"
    refused = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "a", "-o", str(out)], embedded_env)
    assert refused.returncode == 0, refused.stderr
    assert read_jsonl(out)[0]["error_class"] == "DecompressionBomb"
    allowed_env = {**embedded_env, "PISAR_MAX_IMAGE_PIXELS": "200000000"}
    allowed = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "b", "-o", str(out)], allowed_env)
    assert allowed.returncode == 0, allowed.stderr
    assert read_jsonl(out)[0]["status"] == "ok"


def test_empty_readings_are_found_by_confidence_flag_and_status(
    empty_model: Path, print_lines: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    """An empty reading of an inked line is a likely miss: it has a confidence (the end token's
    probability), so confidence filters see it; it is flagged ``empty`` for `retry --flag empty`;
    and `status` counts it."""
    source = lines_folder(tmp_path, print_lines, 4)
    out = tmp_path / "r.jsonl"
    ran = run_pisar(["run", str(source), "--model", str(empty_model), "--name", "blank", "-o", str(out)], embedded_env)
    assert ran.returncode == 0, ran.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["text"], r["flags"], r["token_count"]) for r in records] == [("", "empty", 0)] * 4
    assert all(0 < r["confidence"] < 1 and r["confidence"] == r["min_token_prob"] for r in records)

    report = json.loads(run_pisar(["status", "blank", "--json"], embedded_env).stdout)
    assert report["empty_lines"] == 4
    assert "4 ok lines were read as empty" in run_pisar(["status", "blank"], embedded_env).stdout
    below = max(r["confidence"] for r in records) * 1.01
    selected = run_pisar(["retry", "blank", "--below-confidence", f"{below:.6g}", "--dry-run"], embedded_env)
    assert "would re-run 4 lines" in selected.stderr, selected.stderr
    flagged = run_pisar(["retry", "blank", "--flag", "empty", "--dry-run"], embedded_env)
    assert "would re-run 4 lines" in flagged.stderr and "flags empty: 4 lines" in flagged.stderr, flagged.stderr
    above = run_pisar(["export", "blank", "--min-confidence", f"{below:.6g}"], embedded_env)
    assert above.returncode == 0 and above.stdout.strip() == ""  # none is as sure as that
