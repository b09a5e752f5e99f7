"""line.key in byte order (COLLATE "C"), so exports stream from the unique index instead of sorting

Exports list lines in key byte order (each page folder's lines in one run). With the database's
default collation (e.g. ``C.UTF-8`` or ``en_US.UTF-8``) the unique index on (campaign_id, key) is
in another order, and an export of a 100 M-line campaign first sorted every row (a temp file of
tens of GB, minutes before the first line). Object-store keys compare as bytes anyway (S3 lists in
UTF-8 binary order). Postgres only: SQLite's default collation is already byte order.

The table is not rewritten (text to text), but the unique index is rebuilt under an exclusive
lock: minutes on a catalog that already holds 100 M lines, so run `pisar db upgrade` between runs.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE line ALTER COLUMN key TYPE text COLLATE "C"')  # rebuilds uq_line_campaign_key


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE line ALTER COLUMN key TYPE text COLLATE "default"')
