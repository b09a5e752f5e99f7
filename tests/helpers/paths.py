"""The one definition of each path the tests and their helpers use."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "demo"
TEST_DATA = REPO / "tests" / "data"  # in the repository: public-domain lines, an Apache-2.0 page, XML schemas
SCHEMAS = REPO / "pisar" / "schemas"  # the official XSDs every layout export is checked against (pisar/schemas/README.md)
SHARED_DATA = REPO.parent / "shared" / "data"  # beside a development checkout only; never needed by a promise of the suite
BUILD = REPO / "build"


def lines_folder(tmp_path: Path, print_lines: Path, count: int, name: str = "lines") -> Path:
    """A fresh folder under ``tmp_path`` holding the first ``count`` real print lines (a campaign's source)."""
    import shutil

    folder = tmp_path / name
    folder.mkdir()
    for path in sorted(print_lines.glob("*.png"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder
