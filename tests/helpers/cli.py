"""The installed `pisar` console script, run as a user would, and waiting on what it sets going."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PISAR = str(Path(sys.executable).with_name("pisar"))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL export, in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_pisar(args: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``pisar ARGS`` in a subprocess with ``env`` and capture what it says."""
    return subprocess.run([PISAR, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], contains: str) -> None:
    """A refused command: non-zero, no traceback, one ``pisar: error:`` line that says ``contains``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pisar: error: ")
    assert contains in lines[0], lines[0]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll ``check`` until it holds; after ``timeout`` seconds fail, saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
