"""The one definition of each path the tests and their helpers use."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "demo"
TEST_DATA = REPO / "tests" / "data"  # in the repository: public-domain lines, an Apache-2.0 page, XML schemas
SCHEMAS = REPO / "pisar" / "schemas"  # the official XSDs every layout export is checked against (pisar/schemas/README.md)
SHARED_DATA = REPO.parent / "shared" / "data"  # beside a development checkout only; never needed by a promise of the suite
BUILD = REPO / "build"
