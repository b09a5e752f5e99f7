"""Bulk writes of line rows: psycopg 3 COPY on Postgres, executemany upserts on SQLite.

Both run on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, TextClause, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pisar.catalog.models import Line, LineStatus


class LineResult(NamedTuple):
    """One line's outcome as written to the catalog."""

    key: str
    status: str
    text: str | None
    confidence: float | None
    min_token_prob: float | None
    token_count: int | None
    error_class: str | None
    error: str | None
    note: str | None
    flags: str | None
    worker: str
    finished_at: datetime
    width: int | None = None  # the image as decoded; None when it could not be read
    height: int | None = None
    model: str | None = None  # id@revision of the model that read it; set by ``store.commit``


_RESULT_COLUMNS = LineResult._fields
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
    _keep_superseded(conn, shard_id)
    if conn.dialect.name == "postgresql":
        _upsert_postgres(conn, campaign_id, shard_id, results)
        return
    statement = sqlite_insert(_LINE)
    statement = statement.on_conflict_do_update(
        index_elements=["campaign_id", "key"],
        set_={**{name: statement.excluded[name] for name in (*_RESULT_COLUMNS[1:], "shard_id")}, "retry_id": None},
    )
    conn.execute(statement, [{"campaign_id": campaign_id, "shard_id": shard_id, **r._asdict()} for r in results])


def _upsert_postgres(conn: Connection, campaign_id: int, shard_id: int, results: Sequence[LineResult]) -> None:
    """COPY into a temporary stage table, then one ``INSERT ... ON CONFLICT`` from it."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS line_stage ("
            " key text, status varchar(10), text text, confidence double precision,"
            " min_token_prob double precision, token_count integer, error_class varchar(100),"
            " error text, note text, flags text, worker varchar(300), finished_at timestamptz,"
            " width integer, height integer, model text) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY line_stage ({', '.join(_RESULT_COLUMNS)}) FROM STDIN") as copy:
            for row in results:
                copy.write_row(row)
    stage_columns = ", ".join(_RESULT_COLUMNS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in (*_RESULT_COLUMNS[1:], "shard_id")) + ", retry_id = NULL"

    conn.execute(
        text(
            f"INSERT INTO line (campaign_id, shard_id, {stage_columns}) "
            f"SELECT :campaign_id, :shard_id, {stage_columns} FROM line_stage "
            f"ON CONFLICT (campaign_id, key) DO UPDATE SET {updates}"
        ),
        {"campaign_id": campaign_id, "shard_id": shard_id},
    )


def count_shard_lines(conn: Connection, shard_id: int) -> None:
    """Rewrite the shard's ``ok_lines`` / ``error_lines`` from its lines, in the caller's transaction.

    Called wherever line results change (a commit, a line set aside), so the counters `status`
    sums are exact; one shard's few hundred lines are read through ``ix_line_shard``.
    """
    conn.execute(count_shard_lines_statement(shard_id))


def count_shard_lines_statement(shard_id: int) -> TextClause:
    """The counters' rewrite for one shard (also EXPLAINed by bench/catalog.py)."""
    return text(
        "UPDATE shard SET"
        " ok_lines = (SELECT count(*) FROM line WHERE line.shard_id = :id AND line.status = :ok),"
        " error_lines = (SELECT count(*) FROM line WHERE line.shard_id = :id AND line.status = :error)"
        " WHERE id = :id"
    ).bindparams(id=shard_id, ok=LineStatus.OK.value, error=LineStatus.ERROR.value)


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
