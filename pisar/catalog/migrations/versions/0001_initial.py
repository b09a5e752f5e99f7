"""initial catalog: campaign, shard, line

Revision ID: 0001
Revises:
Create Date: 2026-11-26 11:49:16.006204
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("model_revision", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("dtype", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("generation", sa.JSON(), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=False),
        sa.Column("confidence_formula", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("queue", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("shard_size", sa.Integer(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("skipped_files", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "shard",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duplicate_deliveries", sa.Integer(), nullable=False),
        sa.Column("queued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("generate_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "index", name="uq_shard_campaign_index"),
    )
    with op.batch_alter_table("shard", schema=None) as batch_op:
        batch_op.create_index("ix_shard_campaign_state", ["campaign_id", "state"], unique=False)

    op.create_table(
        "line",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("shard_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("min_token_prob", sa.Float(), nullable=True),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("error_class", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
        ),
        sa.ForeignKeyConstraint(
            ["shard_id"],
            ["shard.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "key", name="uq_line_campaign_key"),
    )
    with op.batch_alter_table("line", schema=None) as batch_op:
        batch_op.create_index("ix_line_campaign_status", ["campaign_id", "status"], unique=False)
        batch_op.create_index("ix_line_shard", ["shard_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("line", schema=None) as batch_op:
        batch_op.drop_index("ix_line_shard")
        batch_op.drop_index("ix_line_campaign_status")

    op.drop_table("line")
    with op.batch_alter_table("shard", schema=None) as batch_op:
        batch_op.drop_index("ix_shard_campaign_state")

    op.drop_table("shard")
    op.drop_table("campaign")
