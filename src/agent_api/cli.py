"""The `agent-api` command: serve, migrate, manage users."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent_api import migrate
from agent_api.cli_chat import chat
from agent_api.config import get_settings

app = typer.Typer(help="agent-api: run Claude agents for a team over HTTP and WebSocket.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.command("chat")(chat)
console = Console()
err_console = Console(stderr=True)

# The `websockets` protocol waits for the socket to drain on every send: what lets a stream notice a client that
# stopped reading (and close it) instead of buffering for it without bound.
UVICORN_OPTIONS: dict[str, object] = {"ws": "websockets", "ws_ping_interval": 20.0, "ws_ping_timeout": 20.0}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: AGENT_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AGENT_API_PORT)")] = None,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development)")] = False,
) -> None:
    """Run the API server (migrates the database first unless AGENT_API_AUTO_MIGRATE=false)."""
    import uvicorn

    from agent_api.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "agent_api.main:app",
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        **UVICORN_OPTIONS,  # type: ignore[arg-type]
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION."""
    settings = get_settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url, revision)
    console.print(f"[green]database at {revision}[/green]")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision."""
    migrate.current(get_settings().resolved_database_url)


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("-m", "--message")]) -> None:
    """Autogenerate a migration from the models (for developers)."""
    migrate.revision(get_settings().resolved_database_url, message)


@users_app.command("create")
def users_create(
    username: str,
    email: Annotated[str | None, typer.Option(help="Email address")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Create a user. The password is read from stdin (never from the command line)."""
    if not password_stdin:
        err_console.print("[red]pass --password-stdin and pipe the password in[/red]")
        raise typer.Exit(2)
    password = sys.stdin.readline().rstrip("\r\n")
    from agent_api.cli_users import create_user

    try:
        user = asyncio.run(create_user(username, password, email, admin))
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"created {user['role']} [bold]{user['username']}[/bold] ({user['id']})")


@users_app.command("list")
def users_list() -> None:
    """List users."""
    from agent_api.cli_users import list_users

    table = Table("id", "username", "email", "role", "active", "created")
    for u in asyncio.run(list_users()):
        table.add_row(
            u["id"], u["username"], u["email"] or "", u["role"], "yes" if u["is_active"] else "no", u["created_at"]
        )
    console.print(table)
