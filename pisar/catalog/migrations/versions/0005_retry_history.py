"""Retries that say what they did: the retry log, each line's superseded results, per-shard model overrides

- ``retry``: one row per `pisar retry` (who, when, the selector, the model, how many shards and lines);
- ``line_history``: a line's previous result, kept when a retry selects the line again;
- ``shard.model_id`` / ``shard.model_revision``: the model a retried shard runs with (null: the campaign's);
- ``line.model``: ``id@revision`` of the model that wrote the line's current result;
- ``line.retry_id``: set while a retry has asked for the line again. The line keeps its current
  result until the new one is committed, which moves the old one to ``line_history``.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(300), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=True),
        sa.Column("model_revision", sa.String(200), nullable=True),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "line_history",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("line_id", BIGINT, sa.ForeignKey("line.id"), nullable=False, index=True),
        sa.Column("retry_id", sa.Integer(), sa.ForeignKey("retry.id"), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("min_token_prob", sa.Float(), nullable=True),
        sa.Column("error_class", sa.String(100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flags", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(300), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("shard", sa.Column("model_id", sa.Text(), nullable=True))
    op.add_column("shard", sa.Column("model_revision", sa.String(200), nullable=True))
    with op.batch_alter_table("line") as batch:  # SQLite adds a foreign key only by rebuilding the table
        batch.add_column(sa.Column("model", sa.Text(), nullable=True))
        batch.add_column(sa.Column("retry_id", sa.Integer(), sa.ForeignKey("retry.id", name="fk_line_retry"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.drop_constraint("fk_line_retry", type_="foreignkey")
        batch.drop_column("retry_id")
        batch.drop_column("model")
    with op.batch_alter_table("shard") as batch:
        batch.drop_column("model_revision")
        batch.drop_column("model_id")
    op.drop_table("line_history")
    op.drop_table("retry")
