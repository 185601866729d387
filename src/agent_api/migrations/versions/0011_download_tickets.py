"""download tickets, and the previous refresh token of a login (the browser tabs' refresh grace)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import agent_api.models.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = agent_api.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "download_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("used_at", UTC_DATETIME, nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_download_tickets_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_download_tickets")),
        sa.UniqueConstraint("ticket_hash", name=op.f("uq_download_tickets_ticket_hash")),
    )
    op.create_index(op.f("ix_download_tickets_user_id"), "download_tickets", ["user_id"], unique=False)
    op.add_column("refresh_token_families", sa.Column("previous_jti", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Plain ALTER (SQLite 3.35+), as in 0009: no batch copy of the table.
    op.execute("ALTER TABLE refresh_token_families DROP COLUMN previous_jti")
    op.drop_index(op.f("ix_download_tickets_user_id"), table_name="download_tickets")
    op.drop_table("download_tickets")
