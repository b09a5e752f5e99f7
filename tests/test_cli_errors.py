"""Operator mistakes and outages: one readable line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, run_pisar
from tests.helpers.paths import lines_folder


def test_unknown_campaign(embedded_env: dict[str, str]) -> None:
    for command in (["status", "nope"], ["export", "nope"], ["retry", "nope"], ["resume", "nope"]):
        assert_one_line_error(run_pisar(command, embedded_env), "no campaign named 'nope'")


def test_redis_unreachable(embedded_env: dict[str, str], tiny_model: Path, print_lines: Path) -> None:
    env = {**embedded_env, "PISAR_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_pisar(["submit", str(print_lines), "--model", str(tiny_model), "--name", "x"], env)
    assert_one_line_error(result, "Redis at redis://127.0.0.1:1/0 is unreachable")
    assert_one_line_error(run_pisar(["worker"], env), "is unreachable")


def test_postgres_unreachable(embedded_env: dict[str, str]) -> None:
    env = {**embedded_env, "PISAR_DATABASE_URL": "postgresql://pisar:secret@127.0.0.1:1/catalog"}
    result = run_pisar(["status", "x"], env)
    assert_one_line_error(result, "catalog database postgresql+psycopg://pisar:***@127.0.0.1:1/catalog is unreachable")
    assert "secret" not in result.stderr


def test_postgres_without_migrations(embedded_env: dict[str, str], postgres_server, tmp_path: Path) -> None:
    import uuid

    import psycopg

    name = f"pisar_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**embedded_env, "PISAR_DATABASE_URL": postgres_server.url.rsplit("/", 1)[0] + f"/{name}"}
        assert_one_line_error(run_pisar(["status", "x"], env), "run `pisar db upgrade`")
        upgraded = run_pisar(["db", "upgrade"], env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert_one_line_error(run_pisar(["status", "x"], env), "no campaign named 'x'")
    finally:
        from pisar.catalog.db import dispose_engines

        dispose_engines()
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://Bad_Bucket!/lines", "bad S3 URL 's3://Bad_Bucket!/lines'"),
        ("gs://bucket/lines", "unsupported source 'gs://bucket/lines'"),
        ("/no/such/folder", "source folder /no/such/folder does not exist"),
    ],
)
def test_bad_source(embedded_env: dict[str, str], tiny_model: Path, source: str, message: str) -> None:
    assert_one_line_error(run_pisar(["run", source, "--model", str(tiny_model)], embedded_env), message)


def test_missing_model_folder(embedded_env: dict[str, str], print_lines: Path) -> None:
    result = run_pisar(["run", str(print_lines), "--model", "/no/such/model", "--name", "m"], embedded_env)
    assert_one_line_error(result, "model folder /no/such/model does not exist")
    assert_one_line_error(run_pisar(["worker", "--model", "/no/such/model"], embedded_env), "model folder /no/such/model does not exist")


def test_folder_that_is_not_a_model(embedded_env: dict[str, str], print_lines: Path) -> None:
    result = run_pisar(["run", str(print_lines), "--model", str(print_lines), "--name", "m"], embedded_env)
    assert_one_line_error(result, "has no config.json")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PISAR_SHARD_SIZE", "0", "PISAR_SHARD_SIZE='0'"),
        ("PISAR_BATCH_SIZE", "many", "PISAR_BATCH_SIZE='many'"),
        ("PISAR_DTYPE", "float8", "PISAR_DTYPE='float8'"),
        ("PISAR_REDIS_URL", "http://localhost", "PISAR_REDIS_URL='http://localhost'"),
        ("PISAR_QUEUE_LOW_WATER", "1000", "PISAR_QUEUE_LOW_WATER='1000': Value error, must be below PISAR_QUEUE_HIGH_WATER (1000)"),
    ],
)
def test_bad_setting(embedded_env: dict[str, str], variable: str, value: str, message: str) -> None:
    assert_one_line_error(run_pisar(["status", "x"], {**embedded_env, variable: value}), message)


def test_bad_arguments(embedded_env: dict[str, str]) -> None:
    assert_one_line_error(run_pisar(["export", "x", "--format", "xml"], {**embedded_env}), "no campaign named 'x'")
    assert_one_line_error(run_pisar(["submit", "s3://b/x"], embedded_env), "Missing option")
    assert_one_line_error(run_pisar(["submit", "s3://b/x", "-m", "m", "-n", "x", "--priority", "10"], embedded_env), "--priority")
    assert_one_line_error(run_pisar(["run", "x", "--model", "m", "--shard-size", "0"], embedded_env), "--shard-size")


def test_worker_refuses_settings_that_would_redeliver_running_shards(embedded_env: dict[str, str], redis_service) -> None:
    env = {**embedded_env, "PISAR_REDIS_URL": redis_service.url, "PISAR_VISIBILITY_TIMEOUT_SECONDS": "600", "PISAR_LEASE_SECONDS": "3600"}
    assert_one_line_error(run_pisar(["worker"], env, timeout=60), "visibility_timeout (600s) must be at least the shard lease (3600s)")


def test_worker_with_a_preload_model_it_cannot_serve_fails_at_start(embedded_env: dict[str, str], redis_service, tiny_model) -> None:
    """`--model` says what the node must serve: a device it lacks refuses the start, before any message is taken."""
    env = {**embedded_env, "PISAR_REDIS_URL": redis_service.url, "PISAR_DEVICE": "cuda"}
    result = run_pisar(["worker", "--model", str(tiny_model)], env, timeout=60)
    assert_one_line_error(result, "PISAR_DEVICE=cuda but this PyTorch build has no CUDA support")
    assert result.returncode == 3 and "cannot serve" in result.stderr
    assert "celery" not in result.stdout.lower()  # Celery never started: no banner, no consumer


def test_embedded_run_on_a_device_it_lacks_is_one_line_and_gives_the_shard_back(
    embedded_env: dict[str, str], tiny_model, print_lines, tmp_path
) -> None:
    """In `pisar run` a node that cannot serve is the command's error: one line, exit 3, the shard left unspent."""
    source = lines_folder(tmp_path, print_lines, 2)
    env = {**embedded_env, "PISAR_DEVICE": "cuda"}
    result = run_pisar(["run", str(source), "--model", str(tiny_model), "--name", "nogpu"], env, timeout=120)
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert said[-1] == "pisar: error: PISAR_DEVICE=cuda but no CUDA device is visible", result.stderr
    report = json.loads(run_pisar(["status", "nogpu", "--json"], embedded_env).stdout)
    assert report["shards"]["queued"] == 1 and report["shard_errors"] == []  # given back, not failed


def test_delivery_guard_names_each_unsafe_setting() -> None:
    from pisar.queue import configure, delivery_problems
    from pisar.settings import Settings

    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    conf = configure(settings).conf
    assert delivery_problems(conf, settings) == []
    try:
        conf.update(task_serializer="pickle", task_acks_late=False, worker_prefetch_multiplier=4)
        problems = " | ".join(delivery_problems(conf, settings))
        assert "JSON only" in problems and "task_acks_late" in problems and "prefetch" in problems
    finally:
        configure(settings)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PISAR_REDIS_URL", "http://:hunter2@localhost", "PISAR_REDIS_URL='http://:***@localhost'"),  # a bad value
        ("PISAR_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0", "Redis at redis://:***@127.0.0.1:1/0 is unreachable"),
        ("PISAR_DATABASE_URL", "postgresql://pisar:hunter2@127.0.0.1:1/x", "catalog database postgresql+psycopg://pisar:***@127.0.0.1:1/x"),
    ],
)
def test_passwords_never_reach_the_operator(embedded_env: dict[str, str], variable: str, value: str, message: str) -> None:
    result = run_pisar(["feed", "--once"], {**embedded_env, variable: value})
    assert_one_line_error(result, message)
    assert "hunter2" not in result.stderr + result.stdout


def test_flower_refuses_to_start_without_a_password(embedded_env: dict[str, str], redis_service) -> None:
    env = {**embedded_env, "PISAR_REDIS_URL": redis_service.url}
    assert_one_line_error(run_pisar(["flower"], env, timeout=60), "set PISAR_FLOWER_BASIC_AUTH=user:password, or pass --no-auth")
    bad = {**env, "PISAR_FLOWER_BASIC_AUTH": "only-a-secret-word"}
    result = run_pisar(["flower"], bad, timeout=60)
    assert_one_line_error(result, "PISAR_FLOWER_BASIC_AUTH entry 1 is not user:password")
    assert "only-a-secret-word" not in result.stderr
