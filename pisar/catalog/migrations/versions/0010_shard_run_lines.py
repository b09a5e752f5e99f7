"""Lines written by a shard's last run, for `status`'s recent throughput

- ``shard.run_lines``: set by each commit to the lines that run wrote. A retry that re-reads 3
  lines of a 256-line shard counts 3 in the recent window, not 256 (the per-shard counters
  ``ok_lines``/``error_lines`` hold the whole shard).

Finished shards start with their whole count, which is what their last run wrote unless it was a retry.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.add_column(sa.Column("run_lines", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE shard SET run_lines = ok_lines + error_lines WHERE state = 'done'")


def downgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.drop_column("run_lines")
