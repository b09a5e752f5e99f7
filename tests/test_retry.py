"""`pisar retry` selectors on a real campaign (demo model, real lines, Postgres): exactly what was asked, recorded, history kept."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from infra.local_services import Service, throwaway_database, unconfigured_env
from pisar.catalog.models import Line, LineHistory, Retry
from tests.helpers.cli import run_pisar
from tests.helpers.paths import DEMO_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def read_once(print_lines: Path, postgres_server: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """16 real print lines and one corrupt file in shards of 6, read by the demo model once per
    module into a database that each test gets a copy of (the name of that template database)."""
    source = tmp_path_factory.mktemp("retry") / "source"
    source.mkdir()
    for path in sorted(print_lines.glob("*.png"))[:16]:
        shutil.copy(path, source / path.name)
    (source / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with throwaway_database(postgres_server, "pisar_retry") as url:
        env = unconfigured_env() | {"PISAR_DATABASE_URL": url}
        args = [
            "run",
            str(source),
            "--model",
            str(DEMO_MODEL),
            "--name",
            "lines",
            "--shard-size",
            "6",
            "-o",
            str(source.parent / "r.jsonl"),
        ]
        ran = run_pisar(args, {**env, "PISAR_TORCH_THREADS": "2"})
        assert ran.returncode == 0, ran.stderr
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def campaign(read_once: str, postgres_server: Service, embedded_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The campaign ``lines`` in a database of this test's own: a copy of the one read once."""
    with throwaway_database(postgres_server, template=read_once) as url:
        yield {**embedded_env, "PISAR_DATABASE_URL": url}


def lines(env: dict[str, str]) -> dict[str, dict]:
    with create_engine(env["PISAR_DATABASE_URL"]).connect() as conn:
        return {r["key"]: dict(r) for r in conn.execute(select(Line.__table__)).mappings()}


def retry(env: dict[str, str], *args: str) -> str:
    done = run_pisar(["retry", "lines", *args], env)
    assert done.returncode == 0, done.stderr
    return done.stderr


def sql(env: dict[str, str], statement: str) -> list:
    with create_engine(env["PISAR_DATABASE_URL"]).begin() as conn:
        result = conn.execute(text(statement))
        return result.all() if result.returns_rows else []


def test_low_confidence_lines_reread_with_another_model_keep_their_history(campaign: dict[str, str], tmp_path: Path) -> None:
    before = lines(campaign)
    ok = sorted((r["confidence"], k) for k, r in before.items() if r["status"] == "ok")
    threshold = (ok[2][0] + ok[3][0]) / 2  # the three least confident lines
    low = {k for _, k in ok[:3]}

    said = retry(campaign, "--below-confidence", str(threshold), "--dry-run")
    assert "would re-run 3 lines" in said and f"confidence below {threshold}: 3 lines" in said and "nothing changed" in said
    assert lines(campaign) == before and sql(campaign, "SELECT * FROM retry") == []

    other = tmp_path / "demo-copy"
    shutil.copytree(DEMO_MODEL, other)
    said = retry(campaign, "--below-confidence", str(threshold), "--model", str(other))
    assert "retry 1: re-running 3 lines" in said
    after = lines(campaign)
    reread = {k for k in after if after[k]["finished_at"] != before[k]["finished_at"]}
    assert reread == low, "only the selected lines were read again"
    assert all(after[k]["model"].startswith(str(other)) and after[k]["retry_id"] is None for k in low)
    assert all(after[k]["model"].startswith(str(DEMO_MODEL)) for k in after if k not in low)

    with create_engine(campaign["PISAR_DATABASE_URL"]).connect() as conn:
        history = conn.execute(select(LineHistory.__table__)).mappings().all()
        [record] = conn.execute(select(Retry.__table__)).mappings().all()
    by_line = {h["line_id"]: h for h in history}
    assert sorted(by_line) == sorted(before[k]["id"] for k in low)
    for key in low:
        kept = by_line[before[key]["id"]]
        assert (kept["text"], kept["confidence"], kept["model"], kept["retry_id"]) == (
            before[key]["text"],
            before[key]["confidence"],
            before[key]["model"],
            1,
        )
    assert record["selector"]["below_confidence"] == threshold and record["model_id"] == str(other)
    assert (record["line_count"], record["shard_count"]) == (3, len({before[k]["shard_id"] for k in low}))
    assert "@" in record["requested_by"]


def test_flags_errors_and_shards_select_exactly_their_lines(campaign: dict[str, str]) -> None:
    before = lines(campaign)
    flagged = sorted(k for k, r in before.items() if r["status"] == "ok")[4]
    sql(campaign, f"UPDATE line SET flags = 'max_length,repetition' WHERE key = '{flagged}'")
    said = retry(campaign, "--flag", "repetition", "--dry-run")
    assert "would re-run 1 lines in 1 shards" in said and f"e.g. {flagged}" in said

    said = retry(campaign, "--shard", "0", "--dry-run")
    assert "would re-run 6 lines in 1 shards" in said and "shards: 0" in said
    said = retry(campaign, "--shard", "0", "--errors", "NotAnImage", "--dry-run")
    assert "would re-run 0 lines in 0 shards" in said, "selectors within --shard intersect"
    for selector, said in (("--shard", "no shard with index 9 in this campaign (its shards: 0 to"), ("--errors", "unknown error class 9")):
        refused = run_pisar(["retry", "lines", selector, "9"], campaign)  # a selector that names nothing is refused, not obeyed silently
        assert (refused.returncode, refused.stderr.count("\n")) == (2, 1) and said in refused.stderr, refused.stderr
    assert "NotAnImage" in refused.stderr and "WorkerCrash" in refused.stderr  # the known classes, listed

    retry(campaign, "--flag", "repetition")
    after = lines(campaign)
    assert after[flagged]["flags"] is None, "the demo model reads it without a flag"
    assert [h.flags for h in sql(campaign, "SELECT flags FROM line_history")] == ["max_length,repetition"]


def test_default_retry_leaves_worker_crashes_unless_named(campaign: dict[str, str]) -> None:
    """With no selector: errored lines, except those that crashed a worker, which would only crash it again."""
    victim = sorted(lines(campaign))[0]
    sql(campaign, f"UPDATE line SET status = 'error', error_class = 'WorkerCrash', text = NULL WHERE key = '{victim}'")
    said = retry(campaign, "--dry-run")
    assert "would re-run 1 lines" in said and "e.g. zz_broken.png" in said
    said = retry(campaign, "--errors", "WorkerCrash")
    assert "re-running 1 lines" in said
    assert lines(campaign)[victim]["status"] == "ok"
    report = json.loads(run_pisar(["status", "lines", "--json"], campaign).stdout)
    assert report["lines"] == {"pending": 0, "ok": 16, "error": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flag", "nope"], "unknown flag nope: use max_length, repetition, empty, unstorable_text"),
        (["--below-confidence", "0"], "--below-confidence must be above 0 and at most 1"),
        (["--model", "/no/such/model"], "/no/such/model"),
    ],
)
def test_bad_retry_arguments_are_one_readable_line(embedded_env: dict[str, str], args: list[str], message: str) -> None:
    """Refused before the catalog is opened: no campaign is needed to be told."""
    done = run_pisar(["retry", "lines", *args], embedded_env)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def read_until(proc, text: str, timeout: float) -> str:  # a Popen with text stdout
    """What ``proc`` printed up to the first line holding ``text``; fails after ``timeout`` seconds."""
    import select
    import time

    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return "".join(seen)
    raise AssertionError(f"no {text!r} from {proc.args} within {timeout:.0f}s: {''.join(seen)}")


def test_status_watch_redraws_until_finished_and_leaves_on_ctrl_c(campaign: dict[str, str]) -> None:
    """A finished campaign: one screen, exit 0. Unfinished (a retry waiting, no worker): it refreshes until Ctrl-C."""
    import signal
    import subprocess
    import time

    from tests.helpers.cli import PISAR

    done = run_pisar(["status", "lines", "--watch", "--interval", "0.2"], campaign)
    assert done.returncode == 0 and "17/17 done (100.0%)" in done.stdout

    sql(campaign, "UPDATE line SET status = 'pending' WHERE key = 'zz_broken.png'")  # as if its shard had not run yet
    sql(campaign, "UPDATE shard SET error_lines = error_lines - 1 WHERE id = (SELECT shard_id FROM line WHERE key = 'zz_broken.png')")
    watching = subprocess.Popen(
        [PISAR, "status", "lines", "--watch", "--interval", "0.2"], env=campaign, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:  # piped, each refresh prints a screen: the first one means the watch loop (and its Ctrl-C handler) is running
        first = read_until(watching, "1 pending", timeout=120)
        time.sleep(1.0)  # several refreshes
        assert watching.poll() is None, f"--watch ended on an unfinished campaign: {first}"
    finally:
        watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=10)
    assert watching.returncode == 0, err
    assert "16/17 done" in first and "Traceback" not in err
    assert out.count("16/17 done") >= 2  # it kept refreshing until Ctrl-C


def test_a_retry_that_selects_nothing_records_nothing(campaign: dict[str, str]) -> None:
    said = retry(campaign, "--flag", "max_length")
    assert "nothing to re-run: 0 lines in 0 shards" in said
    assert sql(campaign, "SELECT * FROM retry") == []
