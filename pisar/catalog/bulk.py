"""Bulk writes of line rows: psycopg 3 COPY on Postgres, executemany upserts on SQLite.

Both run on the caller's connection, inside the caller's transaction. Every result goes through
``LineResult.storable`` first, so the two backends store the same text (``pisar/catalog/storable.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime

from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pisar.catalog.codecs import encode_flags, encode_word_confidences
from pisar.catalog.models import Line, LineStatus
from pisar.catalog.storable import storable
from pisar.flags import UNSTORABLE_TEXT, Flag


@dataclass(frozen=True, kw_only=True)
class LineResult:
    """One line's outcome as written to the catalog; every field is a column of ``line``."""

    key: str
    status: str  # a ``LineStatus``
    worker: str
    finished_at: datetime
    text: str | None = None
    confidence: float | None = None
    min_token_prob: float | None = None
    token_count: int | None = None
    error_class: str | None = None
    error: str | None = None
    note: str | None = None  # how the file was read, when not as it is
    flags: tuple[Flag, ...] = ()  # stored through ``pisar/catalog/codecs.py``
    width: int | None = None  # the image as decoded; None when it could not be read
    height: int | None = None
    model: str | None = None  # id@revision of the model that read it
    word_confidences: tuple[float, ...] | None = None  # per word of ``pisar.words.words(text)``; None: not read
    region_id: str | None = None  # a page line's TextLine region, scan and reading-order place
    image: str | None = None
    reading_order: int | None = None

    def storable(self) -> LineResult:
        """This result as every catalog can hold it: NUL and lone surrogates replaced, and the text flagged."""
        changes: dict[str, object] = {}
        if self.text is not None:
            clean, count = storable(self.text)
            if count:
                changes["text"] = clean
                changes["flags"] = tuple(dict.fromkeys((*self.flags, UNSTORABLE_TEXT)))
        # Pisar's own messages may quote a decoder's bytes, and a page's ids and names hold what its file holds: cleaned, not flagged
        for name in ("error", "note", "region_id", "image"):
            value = getattr(self, name)
            if value is not None and storable(value)[1]:
                changes[name] = storable(value)[0]
        return replace(self, **changes) if changes else self

    def as_row(self) -> tuple[object, ...]:
        """The values in ``RESULT_COLUMNS`` order, as the catalog stores them (a COPY row)."""
        stored = {"flags": encode_flags(self.flags), "word_confidences": encode_word_confidences(self.word_confidences)}
        return tuple(stored[name] if name in stored else getattr(self, name) for name in RESULT_COLUMNS)


RESULT_COLUMNS = tuple(f.name for f in fields(LineResult))
_LINE = Line.__table__


def insert_pending_lines(conn: Connection, campaign_id: int, rows: Iterable[tuple[int, str]]) -> int:
    """Insert ``(shard_id, key)`` rows as pending lines; returns the count."""
    if conn.dialect.name == "postgresql":
        count = 0
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy("COPY line (campaign_id, shard_id, key, status) FROM STDIN") as copy:
            for shard_id, key in rows:
                copy.write_row((campaign_id, shard_id, key, LineStatus.PENDING.value))
                count += 1
        return count
    values = [{"campaign_id": campaign_id, "shard_id": s, "key": k, "status": LineStatus.PENDING.value} for s, k in rows]
    if values:
        conn.execute(insert(_LINE), values)
    return len(values)


def upsert_line_results(conn: Connection, campaign_id: int, shard_id: int, results: Sequence[LineResult]) -> None:
    """Write results so that a line has exactly one row whatever ran before (idempotent).

    A line a retry asked for again (``retry_id`` set) first has its current result copied to
    ``line_history``; the new result then clears ``retry_id``.
    """
    if not results:
        return
    results = [r.storable() for r in results]
    _keep_superseded(conn, shard_id)
    if conn.dialect.name == "postgresql":
        _upsert_postgres(conn, campaign_id, shard_id, results)
        return
    statement = sqlite_insert(_LINE)
    statement = statement.on_conflict_do_update(
        index_elements=["campaign_id", "key"],
        set_={**{name: statement.excluded[name] for name in (*RESULT_COLUMNS[1:], "shard_id")}, "retry_id": None},
    )
    conn.execute(statement, [{"campaign_id": campaign_id, "shard_id": shard_id, **_as_dict(r)} for r in results])


def _as_dict(result: LineResult) -> dict[str, object]:
    return dict(zip(RESULT_COLUMNS, result.as_row(), strict=True))


def stage_table_ddl(conn: Connection) -> str:
    """The COPY stage table, column for column as ``line`` declares them (so the two cannot drift)."""
    columns = ", ".join(f"{name} {_LINE.c[name].type.compile(dialect=conn.dialect)}" for name in RESULT_COLUMNS)
    return f"CREATE TEMP TABLE IF NOT EXISTS line_stage ({columns}) ON COMMIT DELETE ROWS"


def _upsert_postgres(conn: Connection, campaign_id: int, shard_id: int, results: Sequence[LineResult]) -> None:
    """COPY into a temporary stage table, then one ``INSERT ... ON CONFLICT`` from it."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(stage_table_ddl(conn))
        with cursor.copy(f"COPY line_stage ({', '.join(RESULT_COLUMNS)}) FROM STDIN") as copy:
            for row in results:
                copy.write_row(row.as_row())
    stage_columns = ", ".join(RESULT_COLUMNS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in (*RESULT_COLUMNS[1:], "shard_id")) + ", retry_id = NULL"
    conn.execute(
        text(
            f"INSERT INTO line (campaign_id, shard_id, {stage_columns}) "
            f"SELECT :campaign_id, :shard_id, {stage_columns} FROM line_stage "
            f"ON CONFLICT (campaign_id, key) DO UPDATE SET {updates}"
        ),
        {"campaign_id": campaign_id, "shard_id": shard_id},
    )


_KEPT = ("status", "text", "confidence", "min_token_prob", "error_class", "error", "flags", "model", "worker", "finished_at")


def _keep_superseded(conn: Connection, shard_id: int) -> None:
    """Copy the results about to be replaced by a retry into ``line_history``, in the caller's transaction."""
    columns = ", ".join(_KEPT)
    conn.execute(
        text(
            f"INSERT INTO line_history (line_id, retry_id, {columns}) "
            f"SELECT id, retry_id, {columns} FROM line "
            "WHERE shard_id = :shard_id AND retry_id IS NOT NULL AND status != :pending"
        ),
        {"shard_id": shard_id, "pending": LineStatus.PENDING.value},
    )
