"""Page scans with no layout: a ``page`` row per scan of a detect campaign

- ``page``: one scan to detect, its state (the shard states, moved only by
  ``pisar/catalog/pages.py``), lease and fencing token, what the detector found as PAGE XML, the
  read shard its lines join, and why it failed where it did.
- ``shard.state`` gains ``detecting``: a detect campaign's read shard before its scans are settled.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("shard_id", sa.Integer(), sa.ForeignKey("shard.id"), nullable=False),
        sa.Column("key", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_class", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("flags", sa.Text(), nullable=True),
        sa.Column("line_count", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("detector", sa.Text(), nullable=True),
        sa.Column("layout", sa.Text(), nullable=True),
        sa.Column("queued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("detect_seconds", sa.Float(), nullable=True),
        sa.UniqueConstraint("campaign_id", "key", name="uq_page_campaign_key"),
    )
    op.create_index("ix_page_campaign_state", "page", ["campaign_id", "state"])
    op.create_index("ix_page_shard", "page", ["shard_id"])


def downgrade() -> None:
    op.drop_index("ix_page_shard", table_name="page")
    op.drop_index("ix_page_campaign_state", table_name="page")
    op.drop_table("page")
