"""A scan detected again by `pisar retry --scan ...`: which detector, which retry

- ``page.detector_name``: the detector `retry --detector` chose for this scan (unset: the worker's
  ``PISAR_DETECTOR``).
- ``page.retry_id``: the retry that asked for the scan again; the lines of its new detection are
  re-read under that retry, so each line's earlier result goes to ``line_history``.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("page") as batch:
        batch.add_column(sa.Column("detector_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("retry_id", sa.Integer(), sa.ForeignKey("retry.id", name="fk_page_retry_id"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("page") as batch:
        batch.drop_column("retry_id")
        batch.drop_column("detector_name")
