"""estimated turn costs; idempotency fingerprints and requests in progress; the session's CLI cost total retired

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("turns", sa.Column("cost_estimated", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("idempotency_records", sa.Column("fingerprint", sa.String(length=64), nullable=True))
    op.add_column(
        "idempotency_records", sa.Column("in_progress", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    # Plain ALTER (SQLite 3.35+): a batch copy of `sessions` would cascade-delete its children on SQLite.
    op.execute("ALTER TABLE sessions DROP COLUMN sdk_cost_total_usd")


def downgrade() -> None:
    op.execute("ALTER TABLE idempotency_records DROP COLUMN in_progress")
    op.execute("ALTER TABLE idempotency_records DROP COLUMN fingerprint")
    op.execute("ALTER TABLE turns DROP COLUMN cost_estimated")
    op.add_column(
        "sessions",
        sa.Column(
            "sdk_cost_total_usd", sa.Numeric(precision=14, scale=6, asdecimal=False), nullable=False, server_default="0"
        ),
    )
