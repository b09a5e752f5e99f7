"""A hub id at a pinned revision, through the real loading code, from a Hugging Face cache offline.

No hub is reachable here, so the test lays the model out the way huggingface_hub caches it
(refs/main -> snapshots/<commit>/) and runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, run_pisar
from tests.helpers.paths import lines_folder

pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_env(tiny_model: Path, embedded_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "hf" / "hub" / "models--archive--tiny-htr"
    shutil.copytree(tiny_model, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return {**embedded_env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def test_hub_id_is_pinned_to_its_commit_and_reads_like_the_folder(
    hub_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    source = lines_folder(tmp_path, print_lines, 6)
    by_hub, by_folder = tmp_path / "hub.jsonl", tmp_path / "folder.jsonl"
    hub = run_pisar(["run", str(source), "--model", "archive/tiny-htr@main", "--name", "hub", "-o", str(by_hub)], hub_env)
    assert hub.returncode == 0, hub.stderr
    folder = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "folder", "-o", str(by_folder)], hub_env)
    assert folder.returncode == 0, folder.stderr

    def texts(path: Path) -> list[tuple[str, str]]:
        return [(r["key"], r["text"]) for r in map(json.loads, path.read_text().splitlines())]

    assert texts(by_hub) == texts(by_folder)
    report = json.loads(run_pisar(["status", "hub", "--json"], hub_env).stdout)
    assert (report["model"], report["model_revision"]) == ("archive/tiny-htr", COMMIT)


def test_unknown_revision_is_one_line(hub_env: dict[str, str], print_lines: Path) -> None:
    result = run_pisar(["run", str(print_lines), "--model", "archive/tiny-htr@v9", "--name", "x"], hub_env)
    assert_one_line_error(result, "model archive/tiny-htr@v9 is not a folder and the hub could not resolve it")
