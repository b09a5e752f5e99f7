"""compose.yaml as `docker-compose config` resolves it: the shared reading for the deployment tests.

No Docker engine runs here. Debian's docker-compose (v1) parses, interpolates and validates the file
without one, so the tests read the configuration exactly as compose would hand it to the engine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import REPO

ENV_EXAMPLE = REPO / ".env.example"
PROFILES = ("cpu", "monitoring", "tools")

# Variables compose gives Pisar's containers that are not PISAR_* settings, and who reads each.
READ_BY_LIBRARIES = {
    "AWS_ACCESS_KEY_ID": "botocore (S3 credentials)",
    "AWS_SECRET_ACCESS_KEY": "botocore (S3 credentials)",
    "AWS_DEFAULT_REGION": "botocore (S3 region)",
    "HF_HOME": "huggingface_hub (where hub models are cached: the models volume)",
    "HF_HUB_OFFLINE": "huggingface_hub (1 forbids downloads)",
    "CUDA_VISIBLE_DEVICES": "torch (the one GPU the container sees) and `pisar worker`'s node name",
}


def docker_compose(*args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose`` in the repository (installed by ``make test-tools``; its absence is an error)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make test-tools` installs Debian's package"
    chosen = [arg for f in files for arg in ("-f", str(f))]
    command = [binary, "--project-directory", str(REPO), "--env-file", str(env_file), *chosen, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@cache
def resolved(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """``docker-compose config`` with ``.env.example``: anchors merged, variables interpolated."""
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = docker_compose(*flags, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def pisar_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run Pisar's image (``pisar:<version>-cpu`` or ``-cuda``)."""
    return {name: s for name, s in config["services"].items() if s.get("image", "").startswith("pisar:")}


def env_file_values(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blanks skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def interpolated_names(text: str) -> set[str]:
    """Every variable compose interpolates in ``text`` (``${NAME}``, ``${NAME:-x}``, ``${NAME:?x}``, ``${NAME-x}``)."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
