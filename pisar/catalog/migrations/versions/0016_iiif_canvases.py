"""IIIF campaigns: the manifests read at listing and their canvases

- ``iiif_manifest``: each manifest of a campaign's source (collections walked), its JSON for the
  annotation export, or why it could not be read;
- ``iiif_canvas``: each canvas as a page (``<manifest slug>/p<n>``): its id, size, Image API
  service or image URL, and its layout: linked by the manifest, or a file of the campaign's
  ``layouts_url`` (``--layouts``) matched to it (``layout_key``).
- ``campaign.layouts_url``: that folder or S3 prefix.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iiif_manifest",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("canvas_count", sa.Integer(), nullable=False),
        sa.Column("error_class", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("campaign_id", "url", name="uq_iiif_manifest_campaign_url"),
    )
    op.create_table(
        "iiif_canvas",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("manifest_id", sa.Integer(), sa.ForeignKey("iiif_manifest.id"), nullable=False),
        sa.Column("key", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("canvas_id", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("service", sa.Text(), nullable=True),
        sa.Column("service_version", sa.Integer(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("layout", sa.Text(), nullable=True),
        sa.Column("layout_key", sa.Text(), nullable=True),
        sa.UniqueConstraint("campaign_id", "key", name="uq_iiif_canvas_campaign_key"),
    )
    op.create_index("ix_iiif_canvas_campaign_id", "iiif_canvas", ["campaign_id", "id"], unique=False)
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("layouts_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("layouts_url")
    op.drop_table("iiif_canvas")
    op.drop_table("iiif_manifest")
