"""Fault-test helpers: a campaign submitted to real services, watched through the catalog, and
compared with what a fault-free reading of the same lines gives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Line, Shard
from pisar.settings import Settings
from tests.helpers.cli import run_pisar
from tests.helpers.paths import REPO
from tests.helpers.reference import CardLoop, assert_same_texts
from tests.helpers.s3 import upload

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

    def dump(self) -> str:
        """Every campaign, shard and line row as text: to check what the catalog must never hold."""
        from pisar.catalog.models import Campaign

        with self.engine.connect() as conn:
            return "\n".join(repr(tuple(row)) for table in (Campaign.__table__, SHARDS, LINES) for row in conn.execute(select(table)))

    def texts(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(LINES.c.key, LINES.c.text)).all())

    def report(self, scenario: str, expected: int, fault_at: datetime | None = None, **extra: object) -> dict[str, object]:
        """Write this run's figures to ``build/chaos/SCENARIO.json`` (for docs/reliability.md) and return them.

        ``lost``: expected lines without a row; ``duplicated``: extra rows of a key; ``resumed_s``:
        from the fault to the first shard finished after it; ``finished_s``: to the last one.
        """
        with self.engine.connect() as conn:
            copies = [n for _, n in conn.execute(select(LINES.c.key, func.count()).group_by(LINES.c.key)).all()]
            finished = sorted(t for (t,) in conn.execute(select(SHARDS.c.finished_at)).all() if t is not None)
        figures: dict[str, object] = {
            "scenario": scenario,
            "lines": expected,
            "lost": expected - len(copies),
            "duplicated": sum(n - 1 for n in copies),
            "shards": self.states(),
            "lines_by_status": self.line_statuses(),
        }
        if fault_at is not None:
            after = [t for t in finished if t > fault_at]
            figures["resumed_s"] = round((after[0] - fault_at).total_seconds(), 1) if after else None
            figures["finished_s"] = round((after[-1] - fault_at).total_seconds(), 1) if after else None
        figures.update(extra)
        out = REPO / "build" / "chaos"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{scenario}.json").write_text(json.dumps(figures, indent=2, default=str))
        return figures

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

    def assert_read_whole(self, campaign: Watched) -> None:
        """The campaign ended as a fault-free one would: every line once, every line ok, every text the same."""
        campaign.assert_every_line_once(len(self.paths))
        assert campaign.line_statuses() == {"ok": len(self.paths)}  # the fault failed no line
        self.assert_same_texts(campaign.texts())

    def assert_same_texts(self, got: dict[str, str | None], leave_out: frozenset[str] = frozenset()) -> None:
        """Every line in ``got`` (all of them unless some are left out) reads as without faults."""
        keys = set(got) - leave_out
        assert keys <= set(self.expected), sorted(keys - set(self.expected))[:5]
        assert_same_texts(self.card, {k: self.expected[k] for k in keys}, got, self.paths)


def submit(s3, env: dict[str, str], bucket: str, objects: dict[str, bytes], model: Path, shard_size: int) -> Watched:
    """Upload ``objects`` to a new bucket and submit them as campaign ``bucket``."""
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, objects)
    args = ["submit", f"s3://{bucket}/vol", "--model", str(model), "--name", bucket, "--shard-size", str(shard_size)]
    submitted = run_pisar(args, env)
    assert submitted.returncode == 0, submitted.stderr
    return Watched(get_engine(Settings(database_url=env["PISAR_DATABASE_URL"]).catalog_url))


def now() -> datetime:
    """The moment a fault is injected, comparable with the catalog's timestamps."""
    return datetime.now(UTC)
