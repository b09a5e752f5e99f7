"""compose.yaml and the image, checked the way this machine can: by parsing and running their commands."""

from __future__ import annotations

from pathlib import Path

import yaml

from pisar.settings import Settings
from tests.conftest import REPO, run_pisar


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_every_pisar_command_in_compose_exists(embedded_env: dict[str, str]) -> None:
    services = compose()["services"]
    pisar_services = {n: s for n, s in services.items() if s.get("build", {}).get("dockerfile") == "infra/Dockerfile"}
    assert set(pisar_services) == {"migrate", "worker", "feeder", "flower", "metrics"}
    for name, service in pisar_services.items():
        result = run_pisar([*service["command"], "--help"], embedded_env)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_compose_settings_are_real_settings() -> None:
    env: dict[str, str] = {}
    for service in compose()["services"].values():
        env.update(service.get("environment", {}) or {})
    names = {k.removeprefix("PISAR_").lower() for k in env if k.startswith("PISAR_")}
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    settings = Settings(**{k.removeprefix("PISAR_").lower(): v for k, v in env.items() if k.startswith("PISAR_") and v and "$" not in v})
    assert settings.distributed and settings.catalog_url.startswith("postgresql+psycopg://")


def test_image_installs_with_the_pinned_constraints() -> None:
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert "pip install -c constraints.txt ." in dockerfile
    for folder in ("pisar", "worker", "producer"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()
    assert Path(REPO / ".ci" / "run").read_text().strip().endswith("make test")


def test_prometheus_scrapes_the_ports_pisar_serves() -> None:
    """Workers serve PISAR_METRICS_PORT's default, `pisar metrics` the port compose gives it."""
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["pisar-workers"] == [f"worker:{Settings().metrics_port}"]
    assert targets["pisar-catalog"] == ["metrics:9809"]
    assert compose()["services"]["metrics"]["command"] == ["metrics", "--port=9809"]
