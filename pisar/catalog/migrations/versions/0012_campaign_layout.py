"""A campaign reads line images or segmented pages

- ``campaign.layout``: ``lines`` (each image is a line, as before) or ``xml`` (PAGE/ALTO files,
  one catalog line per TextLine, keyed ``<layout key>#<line id>``, cut from the page's scan).
- ``campaign.crop``: how a page line is cut, ``polygon`` (outside the polygon white) or ``box``.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("layout", sa.String(length=20), nullable=False, server_default="lines"))
        batch.add_column(sa.Column("crop", sa.String(length=20), nullable=False, server_default="polygon"))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("crop")
        batch.drop_column("layout")
