"""Alembic, driven from code: the migrations ship inside the package.

Alembic (with the Mako and Pygments it brings, ~7 MiB) is imported only when there is migration work: a server
starting on a database already at the head finds that out with one query (`upgrade`) and never loads it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# `revision: str = "0012"` and `down_revision: str | None = "0011"`, as script.py.mako writes them.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=(.+)$", re.MULTILINE)


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
    from alembic.config import Config  # see the module's docstring

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Kept out of the ini options because those treat "%" (common in passwords) as interpolation.
    cfg.attributes["sync_url"] = sync_url(url)
    return cfg


def shipped_head() -> str | None:
    """The head of the migrations in the package, read from their files as text; None when they do not all state
    their revisions plainly or there is not exactly one head (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        try:
            revisions.add(ast.literal_eval(found["revision"]))
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return None
        parents.update([down] if isinstance(down, str) else down or ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def database_revisions(url: str) -> set[str]:
    """The revisions Alembic has recorded in the database (none for an empty one)."""
    engine = sa.create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return set()
            return set(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    if revision == "head" and database_revisions(url) == {shipped_head()}:
        return  # what Alembic would have found, without loading it
    from alembic import command  # see the module's docstring

    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = True) -> None:
    from alembic import command

    command.revision(alembic_config(url), message=message, autogenerate=autogenerate)


def current(url: str) -> None:
    from alembic import command

    command.current(alembic_config(url), verbose=False)
