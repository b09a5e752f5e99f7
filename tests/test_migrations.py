"""The migrations build the catalog the models describe: no table or column one has and the other lacks."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import pisar.catalog.models  # noqa: F401  (the tables, registered on SQLModel.metadata)
from pisar.catalog.db import upgrade

STRUCTURE = {"add_table", "remove_table", "add_column", "remove_column"}


def test_the_migrations_at_head_hold_every_table_and_column_of_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    with create_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    changes = [change for change in diff if isinstance(change, tuple) and change[0] in STRUCTURE]
    assert [(kind, getattr(item, "name", item)) for kind, *rest in changes for item in rest[-1:]] == []
