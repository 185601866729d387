"""Alembic environment: synchronous driver, batch mode on SQLite, one migrator at a time on PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from agent_api.migrate import compared_by_autogenerate
from agent_api.models import Base

# An arbitrary constant: replicas starting together queue on it instead of racing through DDL.
_PG_MIGRATION_LOCK = 72_410_001


def run_migrations() -> None:
    url = context.config.attributes["sync_url"]
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        is_sqlite = connection.dialect.name == "sqlite"
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=is_sqlite,
            compare_type=True,
            include_name=compared_by_autogenerate,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `agent-api db upgrade`")
run_migrations()
