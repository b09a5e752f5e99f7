"""The one definition of the paths the benchmarks use (bench/ is on sys.path when a script here runs)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo"
BUILD = REPO / "build"
SHARED_LINES = REPO.parent / "shared" / "data" / "print-lines"  # all 830 lines, beside a development checkout
# The documented default; a lone clone falls back to the 221 lines the tests use (tests/data/ATTRIBUTION.md).
PRINT_LINES = SHARED_LINES if SHARED_LINES.is_dir() else REPO / "tests" / "data" / "print-lines"
