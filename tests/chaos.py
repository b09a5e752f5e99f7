"""Fault-test helpers: a campaign submitted to real services and watched through the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, Shard
from pisar.settings import Settings
from tests.conftest import run_pisar
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

    def assert_every_line_once(self, count: int) -> None:
        """Nothing lost, nothing duplicated: ``count`` keys, one row each."""
        with self.engine.connect() as conn:
            copies = conn.execute(select(LINES.c.key, func.count()).group_by(LINES.c.key)).all()
        assert len(copies) == count and {n for _, n in copies} == {1}


def real_lines(print_lines: Path, count: int) -> dict[str, bytes]:
    """The first ``count`` real scans as ``vol/NAME`` objects."""
    return {f"vol/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:count]}


def submit(s3, env: dict[str, str], bucket: str, objects: dict[str, bytes], model: Path, shard_size: int) -> Watched:  # noqa: ANN001
    """Upload ``objects`` to a new bucket and submit them as campaign ``bucket``."""
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, objects)
    args = ["submit", f"s3://{bucket}/vol", "--model", str(model), "--name", bucket, "--shard-size", str(shard_size)]
    submitted = run_pisar(args, env)
    assert submitted.returncode == 0, submitted.stderr
    return Watched(get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url))
