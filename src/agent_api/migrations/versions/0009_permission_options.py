"""per-session permission options: how long a request waits for a person, and what the silence becomes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Sessions, and the templates and tasks that give new sessions their settings. Null: the server's default.
TABLES = ("sessions", "session_templates", "tasks")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("permission_timeout_s", sa.Double(), nullable=True))
        op.add_column(table, sa.Column("on_permission_timeout", sa.String(length=8), nullable=True))


def downgrade() -> None:
    # Plain ALTER (SQLite 3.35+): a batch copy of `sessions` would cascade-delete its children on SQLite.
    for table in reversed(TABLES):
        op.execute(f"ALTER TABLE {table} DROP COLUMN on_permission_timeout")
        op.execute(f"ALTER TABLE {table} DROP COLUMN permission_timeout_s")
