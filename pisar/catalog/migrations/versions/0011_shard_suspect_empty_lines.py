"""A suspect shard is a column, not an error prefix; empty readings are flagged and counted

- ``shard.suspect``: its last worker died, so its next run reads one line at a time
  (``pisar/catalog/shards.py``). It was read from whether ``shard.error`` started with
  ``WorkerLost``; a shard whose error says so now has the column set.
- ``line.flags`` gains ``empty`` on ok lines whose text is empty or blank (new results get it from
  the engine, with the probability of the end token as their confidence; old rows keep a NULL one).
- ``shard.empty_lines``: such lines per shard, rewritten with the other counters, for `status`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.add_column(sa.Column("suspect", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("empty_lines", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE shard SET suspect = TRUE WHERE error LIKE 'WorkerLost%'")
    op.execute(
        "UPDATE line SET flags = CASE WHEN flags IS NULL OR flags = '' THEN 'empty' ELSE flags || ',empty' END"
        " WHERE status = 'ok' AND TRIM(COALESCE(text, '')) = ''"
    )
    op.execute(
        "UPDATE shard SET empty_lines = (SELECT count(*) FROM line WHERE line.shard_id = shard.id AND line.status = 'ok'"
        " AND (',' || line.flags || ',') LIKE '%,empty,%')"
        " WHERE EXISTS (SELECT 1 FROM line WHERE line.shard_id = shard.id AND line.status = 'ok' AND line.flags LIKE '%empty%')"
    )


def downgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.drop_column("empty_lines")
        batch.drop_column("suspect")
