"""line.note: what was done to a file to read it (first of N frames, EXIF orientation, 16 to 8 bits);
line.flags: generation-failure flags (max_length, repetition)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("line", sa.Column("note", sa.Text(), nullable=True))
    op.add_column("line", sa.Column("flags", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.drop_column("flags")
        batch.drop_column("note")
