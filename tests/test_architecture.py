"""Architecture rules, read from the source: who may import whom, and who may write a shard's row.

import-linter (``make test`` runs ``lint-imports`` on the contracts in pyproject.toml) checks the
imports of the installed package; these tests check the same rules on the files themselves, every
import statement included (those inside functions too), and add the rule no import graph can see:
``pisar/catalog/shards.py`` is the only module that writes the ``shard`` table.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

import pytest

from tests.helpers.paths import REPO

#: The top-level folders of the package and the names they install as (pyproject's package-dir).
PACKAGES = {"pisar": "pisar", "worker": "pisar.worker", "producer": "pisar.producer"}
SIDES = ("pisar.worker", "pisar.producer")
COMPOSITION = ("pisar.cli", "pisar.embedded")  # the only modules that may import both sides
SHARD_OWNER = "pisar.catalog.shards"
SHARD_TABLE_NAMES = {"_SHARD", "SHARDS", "Shard"}  # how modules name the table (``Shard.__table__`` included)
RAW_SHARD_WRITE = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+shard\b", re.IGNORECASE)


def modules() -> Iterator[tuple[str, ast.Module]]:
    """Every module of the package: its installed name and its syntax tree (migrations left out: DDL)."""
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO / folder).with_suffix("")
            if "migrations" in relative.parts:
                continue
            parts = [p for p in relative.parts if p != "__init__"]
            yield ".".join([package, *parts]), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(tree: ast.Module, module: str) -> set[str]:
    """Every module an import statement of ``tree`` names, relative imports resolved against ``module``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def side_of(module: str) -> str | None:
    return next((side for side in SIDES if within(module, side)), None)


ALL = list(modules())


def test_the_package_is_read_whole() -> None:
    names = {name for name, _ in ALL}
    assert {"pisar.catalog.shards", "pisar.worker.runner", "pisar.producer.feeder", "pisar.cli", "pisar.embedded", "pisar.reader"} <= names


@pytest.mark.parametrize(("module", "tree"), [m for m in ALL if not side_of(m[0]) and not any(within(m[0], c) for c in COMPOSITION)])
def test_the_shared_core_imports_neither_side(module: str, tree: ast.Module) -> None:
    wrong = sorted(name for name in imported(tree, module) if side_of(name))
    assert not wrong, f"{module} (shared core) imports {wrong}; move what both sides use into pisar/"


@pytest.mark.parametrize(("module", "tree"), [m for m in ALL if side_of(m[0])])
def test_worker_and_producer_do_not_import_each_other(module: str, tree: ast.Module) -> None:
    mine = side_of(module)
    wrong = sorted(name for name in imported(tree, module) if side_of(name) not in (None, mine))
    assert not wrong, f"{module} imports {wrong}; only {', '.join(COMPOSITION)} compose the two sides"


def shard_writes(tree: ast.Module) -> list[str]:
    """Writes of the shard table in ``tree``: ``update()``/``insert()``/``delete()`` of it, or SQL text that changes it."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("update", "insert", "delete"):
            target = node.args[0] if node.args else None
            if isinstance(target, ast.Attribute) and target.attr == "__table__":
                target = target.value
            if isinstance(target, ast.Name) and target.id in SHARD_TABLE_NAMES:
                found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SHARD_WRITE.search(node.value):
            found.append(f"line {node.lineno}: {node.value[:80]!r}")
    return found


@pytest.mark.parametrize(("module", "tree"), [m for m in ALL if m[0] != SHARD_OWNER])
def test_only_the_lifecycle_module_writes_shards(module: str, tree: ast.Module) -> None:
    assert not shard_writes(tree), f"{module} writes the shard table; every move goes through {SHARD_OWNER}"


def test_the_lifecycle_module_is_found_writing() -> None:
    """The check above would pass on an empty tree: it must see the owner's own writes."""
    owner = dict(ALL)[SHARD_OWNER]
    assert len(shard_writes(owner)) >= 5


def test_the_import_contracts_name_every_core_module() -> None:
    """pyproject's import-linter contract lists the core by name: a new core module must join it."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    core = next(c for c in config["contracts"] if c["type"] == "forbidden")
    listed = set(core["source_modules"])
    top_level = {".".join(name.split(".")[:2]) for name, _ in ALL if name.startswith("pisar.")}
    expected = {name for name in top_level if not side_of(name) and name not in COMPOSITION}
    assert listed == expected


def test_the_reliability_page_shows_the_table_of_moves_as_it_is() -> None:
    """docs/reliability.md draws the lifecycle from ``MOVES``; a change to the table must change the page."""
    from pisar.catalog import shard_moves

    page = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{shard_moves.diagram()}\n```" in page
    assert shard_moves.moves_table() in page


def test_every_state_is_reachable_and_every_shard_can_end() -> None:
    """The table is whole: each state is some move's target, and from each a final state is reachable."""
    from pisar.catalog.models import ShardState
    from pisar.catalog.shard_moves import MOVES

    targets = {t.target for t in MOVES.values()}
    assert targets == set(ShardState)
    final = {ShardState.DONE, ShardState.QUARANTINED}
    for state in ShardState:
        seen, frontier = {state}, [state]
        while frontier:
            here = frontier.pop()
            for transition in MOVES.values():
                if here in transition.sources and transition.target not in seen:
                    seen.add(transition.target)
                    frontier.append(transition.target)
        assert seen & final, f"no move leads from {state} to a final state"


def test_no_test_module_imports_another_or_the_conftest() -> None:
    """Shared test code lives in tests/helpers/; fixtures come from conftest.py by injection only.
    A test module imported by another runs its module fixtures twice and drags its tests' imports along."""
    wrong = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        if "data" in path.relative_to(REPO / "tests").parts:
            continue
        names = imported(ast.parse(path.read_text(encoding="utf-8")), "tests")
        bad = sorted(n for n in names if re.fullmatch(r"tests\.(conftest|test_\w+)(\..+)?", n))
        if bad:
            wrong[str(path.relative_to(REPO))] = bad
    assert not wrong, wrong


def test_the_celery_parent_the_runner_and_the_producer_import_no_torch() -> None:
    """Only the pool child that reads loads a model: the worker's parent (``pisar.worker.tasks``), the
    claim, lease and runner modules, the reader library's own interface (``pisar.reader``: its
    back-ends load when a reader is made), the line sources, the CLI and every producer module import
    neither torch nor transformers (350 MB and seconds per process). Checked in a fresh interpreter."""
    import subprocess
    import sys

    script = (
        "import importlib, pkgutil, sys\n"
        "import pisar.worker.tasks, pisar.worker.runner, pisar.worker.lease, pisar.catalog.shards, pisar.embedded, pisar.cli\n"
        "import pisar.reader, pisar.sources, pisar.worker.batches, pisar.worker.rows, pisar.worker.stopping\n"
        "import pisar.producer\n"
        "for found in pkgutil.iter_modules(pisar.producer.__path__):\n"
        "    importlib.import_module(f'pisar.producer.{found.name}')\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_file_the_code_names_exists() -> None:
    """A docstring or comment that cites a module or page by its path must cite a file that is there:
    a renamed or deleted module leaves no stale pointer behind."""
    cited = re.compile(r"(?<![\w./-])((?:pisar|worker|producer|tests|bench|infra|docs)/[\w./-]+\.(?:py|md|sh|yaml|yml|json|xsd))")
    stale = []
    for folder in ("pisar", "worker", "producer", "tests", "bench", "infra"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for match in cited.finditer(path.read_text(encoding="utf-8")):
                if not (REPO / match.group(1)).exists():
                    stale.append(f"{path.relative_to(REPO)}: {match.group(1)}")
    assert not stale, stale


def test_no_module_decides_by_a_layouts_name() -> None:
    """What a campaign reads is decided once, by ``pisar.sources.line_source``: nothing else compares a
    ``layout`` with a name (``layout == "xml"``), so a new line source is a module and a registration."""
    found = []
    for module, tree in ALL:
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(n, ast.Constant) and isinstance(n.value, str) for n in (node.left, *node.comparators)
            ):
                names = [n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for n in (node.left, *node.comparators)]
                if any(name == "layout" for name in names):
                    found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found
