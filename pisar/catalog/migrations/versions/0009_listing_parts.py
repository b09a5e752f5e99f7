"""Listing in parts, streamed to the catalog and resumable

- ``listing_part``: one row per key range a lister thread lists (a sub-folder of the source, a
  run of consecutive sub-folders, or the objects beside its sub-folders). ``after`` is the last key whose fate is committed, ``carry``
  the keys listed after the last full shard (fewer than a shard), so an interrupted listing goes on
  from exactly there (`pisar resume`);
- ``campaign.listed_at``: set once every part is listed; until then the campaign is still growing.
  Campaigns from before this revision were listed whole, so they get their creation time;
- ``campaign.manifest``: the manifest file the keys came from, if any, so a resume reads it again.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))
    op.execute("UPDATE campaign SET listed_at = created_at")
    op.create_table(
        "listing_part",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("recursive", sa.Boolean(), nullable=False),
        sa.Column("folders", sa.JSON(), nullable=False),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("carry", sa.JSON(), nullable=False),
        sa.Column("keys", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("campaign_id", "ordinal", name="uq_listing_part_campaign_ordinal"),
    )


def downgrade() -> None:
    op.drop_table("listing_part")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("manifest")
        batch.drop_column("listed_at")
