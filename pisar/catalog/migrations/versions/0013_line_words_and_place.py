"""Per-word confidence on every line, and a page line's place on its page

- ``line.word_confidences``: one confidence per word of the text (``pisar.words``), space-separated
  with four decimals: the geometric mean of the word's token probabilities, what ALTO ``WC`` and
  PAGE ``Word/TextEquiv@conf`` export. Older results keep NULL and export the line's confidence.
- ``line.region_id``, ``line.image``, ``line.reading_order``: for a page campaign's line, its
  TextLine's region id, the scan's key and its 0-based place in the page's reading order, recorded
  by the worker that cut it (the page's key and the line's id are its catalog key's two parts).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.add_column(sa.Column("word_confidences", sa.Text(), nullable=True))
        batch.add_column(sa.Column("region_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("image", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reading_order", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.drop_column("reading_order")
        batch.drop_column("image")
        batch.drop_column("region_id")
        batch.drop_column("word_confidences")
