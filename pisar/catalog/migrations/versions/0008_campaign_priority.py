"""Campaign priorities, and a partial index of the shards waiting to be published

- ``campaign.priority``: 0 (lowest) to 9 (most urgent), default 5. The feeder publishes pending
  shards most urgent first, on the Redis list of their priority, so a small urgent campaign
  overtakes a running large one (``producer/feeder.py``);
- ``ix_shard_pending``: the feeder's pick of the next pending shards reads this small index
  instead of every shard of every campaign.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="5"))
    op.create_index(
        "ix_shard_pending",
        "shard",
        ["campaign_id", "index"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_shard_pending", table_name="shard")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("priority")
