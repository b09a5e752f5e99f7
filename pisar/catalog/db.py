"""Opening the catalog: engines, readable connection errors, schema version checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from pisar.errors import CatalogNotReady, ServiceUnavailable
from pisar.settings import redact_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    """One pooled engine per URL per process (Celery children build their own after fork)."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = _create(url)
    return engine


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=POSTGRES_CONNECT_ARGS)


#: libpq options: give up connecting after 5 s, and let TCP keepalives (probe after 30 s idle, every
#: 10 s, 3 misses) and a 60 s user timeout break a connection whose peer vanished (a partition drops
#: packets silently), so a worker errors and retries instead of waiting on a dead socket forever.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def limit_transaction(conn: Connection, seconds: float | None) -> None:
    """Bound the rest of this transaction on Postgres: each statement, and each wait between two.

    The server cancels a statement that runs longer (a lock it waits for) and ends a session left
    idle inside the transaction longer (a client stalled mid-commit), freeing its locks; either
    reaches the client as an ``OperationalError``, an outage. SQLite has its busy timeout instead.
    """
    if not seconds or conn.dialect.name != "postgresql":
        return
    milliseconds = max(1, int(seconds * 1000))
    conn.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
    conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds}"))


def dispose_engines() -> None:
    """Forget pooled connections, e.g. in a forked child that must not share its parent's sockets."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


def alembic_config(url: str) -> Config:
    """An Alembic config for the packaged migrations, without an alembic.ini on disk."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Apply migrations up to ``revision``, one process at a time; returns the resulting revision.

    Under the catalog's migration lock (``pisar/catalog/locks.py``): a second process waits, then
    finds the schema already there and has nothing to do.
    """
    from alembic import command

    from pisar.catalog import locks

    if url.startswith("sqlite:///"):
        Path(make_url(url).database or "pisar.db").parent.mkdir(parents=True, exist_ok=True)
    check_reachable(url)
    with locks.held(url, locks.MIGRATION):
        command.upgrade(alembic_config(url), revision)
    return current_revision(url) or "none"


def head_revision(url: str) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head() or ""


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_reachable(url: str) -> None:
    """Raise ``ServiceUnavailable`` with one line if the database cannot be reached."""
    try:
        with get_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailable(f"catalog database {redact_url(url)} is unreachable: {reason}") from None


def ensure_ready(url: str, auto_upgrade: bool) -> None:
    """Check the schema is at head; SQLite (embedded) upgrades itself, Postgres asks for `pisar db upgrade`."""
    check_reachable(url)
    current = current_revision(url)
    head = head_revision(url)
    if current == head:
        return
    if auto_upgrade:
        upgrade(url)
        return
    state = "has no Pisar tables" if current is None else f"is at revision {current}, code expects {head}"
    raise CatalogNotReady(f"catalog {redact_url(url)} {state}: run `pisar db upgrade`")
