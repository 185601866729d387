"""The `agent-api` command: serve, migrate, manage users."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
import uvicorn
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
log = logging.getLogger("agent_api")

# The `websockets` protocol waits for the socket to drain on every send: what lets a stream notice a client that
# stopped reading (and close it) instead of buffering for it without bound.
UVICORN_OPTIONS: dict[str, object] = {"ws": "websockets", "ws_ping_interval": 20.0, "ws_ping_timeout": 20.0}

# SIGTERM (see `DrainingServer`): the drain of running work, then open connections, then the application's end.
DRAIN_TIMEOUT_S = 15.0  # turns interrupted and recorded (the dispatcher waits 10 s for them), agents closed
CONNECTIONS_TIMEOUT_S = 10.0  # uvicorn's graceful shutdown: what still holds a connection open is cancelled after it
SHUTDOWN_GRACE_S = 30.0  # the whole of it, the application's own end included: what a supervisor should allow


class DrainingServer(uvicorn.Server):
    """uvicorn's graceful shutdown waits for open connections before the application's lifespan ends, by default for
    ever: a `wait: true` query held the process for as long as its turn ran, and the turn was only interrupted after.
    Here the drain comes first, while the listener is still open: new turns are refused (503 `shutting_down`),
    running ones are interrupted and recorded, permission requests still waiting are settled (`cancelled`), so a
    client waiting on a turn gets its answer and stream watchers see how it ended. Then uvicorn closes the listener,
    closes WebSockets with 1012 and ends event streams, and cancels what still holds a connection after
    `CONNECTIONS_TIMEOUT_S`."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await asyncio.wait_for(self.drain(), DRAIN_TIMEOUT_S)
        except Exception:  # the lifespan's end drains again; the exit goes on
            log.exception("draining running work failed")
        await super().shutdown(sockets)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: AGENT_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AGENT_API_PORT)")] = None,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development)")] = False,
) -> None:
    """Run the API server (migrates the database first unless AGENT_API_AUTO_MIGRATE=false)."""
    from agent_api.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "access_log": False,
        "log_config": None,
        "proxy_headers": True,
        "timeout_graceful_shutdown": CONNECTIONS_TIMEOUT_S,
        **UVICORN_OPTIONS,
    }
    if reload:  # development: the reloader imports the application itself, in a child process
        uvicorn.run("agent_api.main:app", reload=True, **options)
        return
    from agent_api.main import app as application

    server = DrainingServer(uvicorn.Config(application, **options), application.state.agent_api.dispatcher.drain)
    # uvicorn re-raises the signal it stopped on once it is done, so a drained server would die "killed by SIGTERM"
    # (exit 143 to Docker). A SIGTERM handler of ours is what uvicorn restores and raises it to: the process then
    # returns from here and exits 0, as a clean stop should.
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        server.run()
    except KeyboardInterrupt:  # SIGINT, re-raised the same way: as uvicorn.run, a clean stop too
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise typer.Exit(3)  # start-up failed (uvicorn logged why): uvicorn.run's exit code


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
