"""session templates, tasks, task executions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import agent_api.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Template search uses each database's own full-text index (names end in _fts; the model comparison skips them).
# PostgreSQL: a GIN index over the same weighted tsvector expression the search query uses.
PG_TEMPLATE_VECTOR = (
    "setweight(to_tsvector('simple', coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('simple', coalesce(tags::text, '')), 'B') || "
    "setweight(to_tsvector('simple', coalesce(description, '')), 'C')"
)
# SQLite: an FTS5 table over the templates' rows, kept current by triggers.
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE session_templates_fts USING fts5("
    "name, tags, description, content='session_templates', content_rowid='rowid')",
    "CREATE TRIGGER session_templates_fts_ai AFTER INSERT ON session_templates BEGIN "
    "INSERT INTO session_templates_fts(rowid, name, tags, description) "
    "VALUES (new.rowid, new.name, new.tags, new.description); END",
    "CREATE TRIGGER session_templates_fts_ad AFTER DELETE ON session_templates BEGIN "
    "INSERT INTO session_templates_fts(session_templates_fts, rowid, name, tags, description) "
    "VALUES ('delete', old.rowid, old.name, old.tags, old.description); END",
    "CREATE TRIGGER session_templates_fts_au AFTER UPDATE ON session_templates BEGIN "
    "INSERT INTO session_templates_fts(session_templates_fts, rowid, name, tags, description) "
    "VALUES ('delete', old.rowid, old.name, old.tags, old.description); "
    "INSERT INTO session_templates_fts(rowid, name, tags, description) "
    "VALUES (new.rowid, new.name, new.tags, new.description); END",
]


def upgrade() -> None:
    op.create_table(
        "session_templates",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("allowed_tools", sa.JSON(), nullable=False),
        sa.Column("disallowed_tools", sa.JSON(), nullable=False),
        sa.Column("blocked_commands", sa.JSON(), nullable=False),
        sa.Column("permission_mode", sa.String(length=32), nullable=False),
        sa.Column("sdk_options", sa.JSON(), nullable=False),
        sa.Column("mcp_server_ids", sa.JSON(), nullable=False),
        sa.Column("initial_message", sa.Text(), nullable=True),
        sa.Column("seed_files", sa.JSON(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("usage_count", sa.Integer(), nullable=False),
        sa.Column("last_used_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_session_templates_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_templates")),
    )
    op.create_index(op.f("ix_session_templates_category"), "session_templates", ["category"], unique=False)
    op.create_index(op.f("ix_session_templates_is_public"), "session_templates", ["is_public"], unique=False)
    op.create_index(
        "ix_session_templates_user_id_created_at", "session_templates", ["user_id", "created_at"], unique=False
    )
    op.create_table(
        "session_template_shares",
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["session_templates.id"],
            name=op.f("fk_session_template_shares_template_id_session_templates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_session_template_shares_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("template_id", "user_id", name=op.f("pk_session_template_shares")),
    )
    op.create_index(op.f("ix_session_template_shares_user_id"), "session_template_shares", ["user_id"], unique=False)
    op.create_table(
        "tasks",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("prompt_template", sa.Text(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("allowed_tools", sa.JSON(), nullable=False),
        sa.Column("disallowed_tools", sa.JSON(), nullable=False),
        sa.Column("blocked_commands", sa.JSON(), nullable=False),
        sa.Column("permission_mode", sa.String(length=32), nullable=False),
        sa.Column("sdk_options", sa.JSON(), nullable=False),
        sa.Column("mcp_server_ids", sa.JSON(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("schedule_cron", sa.String(length=120), nullable=True),
        sa.Column("schedule_timezone", sa.String(length=64), nullable=False),
        sa.Column("schedule_enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("generate_report", sa.Boolean(), nullable=False),
        sa.Column("report_format", sa.String(length=8), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("execution_count", sa.Integer(), nullable=False),
        sa.Column("deleted_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["session_templates.id"],
            name=op.f("fk_tasks_template_id_session_templates"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_tasks_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_next_run_at"), "tasks", ["next_run_at"], unique=False)
    op.create_index("ix_tasks_user_id_created_at", "tasks", ["user_id", "created_at"], unique=False)
    op.create_table(
        "task_executions",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger_type", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("report_id", sa.Uuid(), nullable=True),
        sa.Column("result_data", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("total_cost_usd", sa.Numeric(precision=14, scale=6, asdecimal=False), nullable=False),
        sa.Column("created_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", agent_api.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_task_executions_session_id_sessions"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_executions_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_task_executions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_executions")),
        sa.UniqueConstraint("task_id", "scheduled_for", name="uq_task_executions_task_id_scheduled_for"),
    )
    op.create_index(op.f("ix_task_executions_status"), "task_executions", ["status"], unique=False)
    op.create_index("ix_task_executions_task_id_created_at", "task_executions", ["task_id", "created_at"], unique=False)
    op.create_index(op.f("ix_task_executions_user_id"), "task_executions", ["user_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_session_templates_fts ON session_templates USING gin (({PG_TEMPLATE_VECTOR}))")
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_session_templates_fts")
    else:
        for name in ("session_templates_fts_ai", "session_templates_fts_ad", "session_templates_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS session_templates_fts")
    op.drop_index(op.f("ix_task_executions_user_id"), table_name="task_executions")
    op.drop_index("ix_task_executions_task_id_created_at", table_name="task_executions")
    op.drop_index(op.f("ix_task_executions_status"), table_name="task_executions")
    op.drop_table("task_executions")
    op.drop_index("ix_tasks_user_id_created_at", table_name="tasks")
    op.drop_index(op.f("ix_tasks_next_run_at"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_index(op.f("ix_session_template_shares_user_id"), table_name="session_template_shares")
    op.drop_table("session_template_shares")
    op.drop_index("ix_session_templates_user_id_created_at", table_name="session_templates")
    op.drop_index(op.f("ix_session_templates_is_public"), table_name="session_templates")
    op.drop_index(op.f("ix_session_templates_category"), table_name="session_templates")
    op.drop_table("session_templates")
