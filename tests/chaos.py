"""Fault-test helpers: a campaign submitted to real services, watched through the catalog, and
compared with what a fault-free reading of the same lines gives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, Shard
from pisar.settings import Settings
from tests.conftest import run_pisar
from tests.reference import CardLoop, assert_same_texts
from tests.test_end_to_end import upload

SHARDS, LINES = Shard.__table__, Line.__table__


@dataclass
class Watched:
    """One campaign's shards and lines, read from the catalog while faults happen around it."""

    engine: Engine

    def states(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(SHARDS.c.state, func.count()).group_by(SHARDS.c.state)).all())

    def done(self) -> int:
        return self.states().get("done", 0)

    def line_statuses(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(LINES.c.status, func.count()).group_by(LINES.c.status)).all())

    def texts(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(LINES.c.key, LINES.c.text)).all())

    def assert_every_line_once(self, count: int) -> None:
        """Nothing lost, nothing duplicated: ``count`` keys, one row each."""
        with self.engine.connect() as conn:
            copies = conn.execute(select(LINES.c.key, func.count()).group_by(LINES.c.key)).all()
        assert len(copies) == count and {n for _, n in copies} == {1}


class FaultFree:
    """The first ``count`` real scans as ``vol/NAME`` objects, and their texts read without faults.

    The reading is the model card's loop, one image at a time in fp32; ``test_end_to_end`` shows that
    a fault-free distributed campaign reads every line the same, so a fault must change nothing.
    """

    def __init__(self, model: Path, print_lines: Path, count: int) -> None:
        self.paths = {f"vol/{p.name}": p for p in sorted(print_lines.glob("*.png"))[:count]}
        assert len(self.paths) == count, f"{print_lines} holds fewer than {count} lines"
        self.card = CardLoop(model)
        self.expected = {key: self.card.read(path) for key, path in self.paths.items()}

    def objects(self) -> dict[str, bytes]:
        return {key: path.read_bytes() for key, path in self.paths.items()}

    def assert_same_texts(self, got: dict[str, str | None], leave_out: frozenset[str] = frozenset()) -> None:
        """Every line in ``got`` (all of them unless some are left out) reads as without faults."""
        keys = set(got) - leave_out
        assert keys <= set(self.expected), sorted(keys - set(self.expected))[:5]
        assert_same_texts(self.card, {k: self.expected[k] for k in keys}, got, self.paths)


def submit(s3, env: dict[str, str], bucket: str, objects: dict[str, bytes], model: Path, shard_size: int) -> Watched:  # noqa: ANN001
    """Upload ``objects`` to a new bucket and submit them as campaign ``bucket``."""
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, objects)
    args = ["submit", f"s3://{bucket}/vol", "--model", str(model), "--name", bucket, "--shard-size", str(shard_size)]
    submitted = run_pisar(args, env)
    assert submitted.returncode == 0, submitted.stderr
    return Watched(get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url))
