"""indexes for the busy reads: a session's messages in page order, a user's live sessions counted from the index

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ORDER BY created_at, id exactly: no sort (PostgreSQL spilled one to disk at page 50), and an OFFSET that skips
    # index entries rather than rows.
    op.create_index("ix_messages_session_id_created_at_id", "messages", ["session_id", "created_at", "id"])
    op.drop_index("ix_messages_session_id_created_at", table_name="messages")  # a prefix of the new one
    # COUNT(*) of a user's sessions WHERE status != 'terminated' answered from the index alone.
    op.create_index("ix_sessions_user_id_status", "sessions", ["user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_sessions_user_id_status", table_name="sessions")
    op.create_index("ix_messages_session_id_created_at", "messages", ["session_id", "created_at"])
    op.drop_index("ix_messages_session_id_created_at_id", table_name="messages")
