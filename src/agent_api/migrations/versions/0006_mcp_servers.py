"""MCP servers

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 04:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import agent_api.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("server_type", sa.String(length=8), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets_encrypted", sa.Text(), nullable=True),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("is_global", sa.Boolean(), nullable=False),
        sa.Column("health_status", sa.String(length=16), nullable=False),
        sa.Column("last_health_check_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mcp_servers_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_mcp_servers_user_id")),
    )
    with op.batch_alter_table("mcp_servers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mcp_servers_is_global"), ["is_global"], unique=False)
        batch_op.create_index(batch_op.f("ix_mcp_servers_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mcp_status", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("mcp_status")

    with op.batch_alter_table("mcp_servers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mcp_servers_user_id"))
        batch_op.drop_index(batch_op.f("ix_mcp_servers_is_global"))

    op.drop_table("mcp_servers")
