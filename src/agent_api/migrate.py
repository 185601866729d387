"""Alembic, driven from code: the migrations ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sync_url(url: str) -> str:
    """Migrations run on the synchronous driver of the same database."""
    if url.startswith("sqlite+aiosqlite"):
        return "sqlite" + url[len("sqlite+aiosqlite") :]
    if url.startswith("postgresql+asyncpg"):
        return "postgresql+psycopg" + url[len("postgresql+asyncpg") :]
    return url


def compared_by_autogenerate(name: str | None, type_: str, parent_names: object) -> bool:
    """Full-text search objects are database-specific (FTS5 tables, a GIN expression index) and live only in
    the migrations; the model comparison skips them."""
    return "_fts" not in (name or "")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Kept out of the ini options because those treat "%" (common in passwords) as interpolation.
    cfg.attributes["sync_url"] = sync_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = True) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=autogenerate)


def current(url: str) -> None:
    command.current(alembic_config(url), verbose=False)
