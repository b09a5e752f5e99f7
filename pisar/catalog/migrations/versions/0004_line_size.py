"""line.width, line.height: the line image's size as decoded (after EXIF orientation), in pixels

The ALTO and PAGE exports place each line at its own size; rows written before this have none.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("line", sa.Column("width", sa.Integer(), nullable=True))
    op.add_column("line", sa.Column("height", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.drop_column("height")
        batch.drop_column("width")
