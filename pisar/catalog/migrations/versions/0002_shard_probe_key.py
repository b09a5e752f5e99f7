"""shard.probe_key: the line a careful (one line at a time) run is reading, to find poison lines

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("shard", sa.Column("probe_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shard") as batch:
        batch.drop_column("probe_key")
