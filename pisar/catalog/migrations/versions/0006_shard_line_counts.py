"""Per-shard line counters and the indexes that keep `status` fast at 100 M lines

- ``shard.ok_lines`` / ``shard.error_lines``: the shard's lines by result, rewritten in the
  transaction that changes them (a commit, a line set aside). `status` sums shards instead of
  counting lines, so it reads ~1/256 as many rows;
- ``ix_shard_campaign_finished``: throughput over the recent window, and recent workers, from shards;
- ``ix_line_awaiting_retry``: a partial index of the few lines a retry asked for again.

Existing shards are counted once here.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.add_column(sa.Column("ok_lines", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("error_lines", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE shard SET"
        " ok_lines = (SELECT count(*) FROM line WHERE line.shard_id = shard.id AND line.status = 'ok'),"
        " error_lines = (SELECT count(*) FROM line WHERE line.shard_id = shard.id AND line.status = 'error')"
    )
    op.create_index("ix_shard_campaign_finished", "shard", ["campaign_id", "finished_at"])
    op.create_index(
        "ix_line_awaiting_retry",
        "line",
        ["campaign_id"],
        postgresql_where=sa.text("retry_id IS NOT NULL"),
        sqlite_where=sa.text("retry_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_line_awaiting_retry", table_name="line")
    op.drop_index("ix_shard_campaign_finished", table_name="shard")
    with op.batch_alter_table("shard") as batch:
        batch.drop_column("error_lines")
        batch.drop_column("ok_lines")
