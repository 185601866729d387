"""MCP server registry: create, change, delete, health-check, and what sessions attach and run."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agent_api.mcp_servers import policy
from agent_api.mcp_servers import repository as repo
from agent_api.mcp_servers import secrets as vault
from agent_api.mcp_servers.schemas import McpServerCreate, McpServerUpdate, parse_config
from agent_api.models import McpServer, User
from agent_api.models.base import utcnow
from agent_api.runtime import ssrf
from agent_api.state import AppState

if TYPE_CHECKING:
    from agent_api.mcp_servers import health

log = logging.getLogger("agent_api.mcp_servers")

# A session "uses" a server while its agent may hold a connection to it: while it starts, runs a turn or waits for
# a permission answer, and while it is `active` with a live agent process in this server.
ALWAYS_RUNNING = ("connecting", "processing", "waiting")
RUNNING_IF_LIVE = ("active",)


async def check_attachable(db: AsyncSession, user: User, server_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The ids, deduplicated in order, if each is a server the user can see and is enabled; 422 otherwise."""
    unique = list(dict.fromkeys(server_ids))
    found = {s.id: s for s in await repo.get_visible_many(db, user.id, unique)}
    for server_id in unique:
        server = found.get(server_id)
        if server is None:
            raise ValidationFailed(
                "Unknown MCP server", code="mcp_server_not_found", details={"mcp_server_id": str(server_id)}
            )
        if not server.is_enabled:
            raise ValidationFailed(
                f"MCP server {server.name!r} is disabled",
                code="mcp_server_disabled",
                details={"mcp_server_id": str(server_id)},
            )
    return unique


async def get_visible(db: AsyncSession, user: User, server_id: uuid.UUID) -> McpServer:
    server = await repo.get_visible(db, user.id, server_id)
    if server is None:
        raise NotFound("MCP server not found", code="mcp_server_not_found")
    return server


def ensure_editable(user: User, server: McpServer) -> None:
    """Global servers are visible to everyone but changed only by admins (403, since they can see it)."""
    if server.user_id == user.id or (server.is_global and user.is_admin):
        return
    raise Forbidden("Only administrators may change a global MCP server", code="mcp_server_read_only")


def _secret_key(state: AppState) -> str:
    return state.settings.resolved_secret_key()


def stored_secrets(state: AppState, server: McpServer) -> dict[str, dict[str, str]]:
    return vault.decrypt(_secret_key(state), server.secrets_encrypted)


def revealed_config(state: AppState, server: McpServer) -> dict[str, Any]:
    return vault.reveal(server.config, stored_secrets(state, server))


async def _vet(state: AppState, user: User, server_type: str, config: dict[str, Any]) -> None:
    if server_type == "stdio":
        policy.ensure_may_register_stdio(state.settings, user, config)
    else:
        await policy.ensure_safe_url(state.settings, config["url"])


def _store_config(state: AppState, server: McpServer, config: dict[str, Any], previous: dict[str, Any]) -> None:
    try:
        public, secret_values = vault.split(config, previous)
    except KeyError as exc:
        raise ValidationFailed(
            f"'***' stands for a stored secret, and {exc.args[0]} has none", code="mcp_secret_missing"
        ) from exc
    server.config = public
    server.secrets_encrypted = vault.encrypt(_secret_key(state), secret_values)


async def _ensure_name_free(db: AsyncSession, owner_id: uuid.UUID, name: str, own_id: uuid.UUID | None = None) -> None:
    existing = await repo.get_by_name(db, owner_id, name)
    if existing is not None and existing.id != own_id:
        raise Conflict(f"The owner already has an MCP server named {name!r}", code="mcp_server_name_taken")


async def create(db: AsyncSession, state: AppState, user: User, body: McpServerCreate) -> McpServer:
    policy.ensure_may_publish(user, body.is_global)
    await _vet(state, user, body.server_type, body.config)
    await _ensure_name_free(db, user.id, body.name)
    server = McpServer(
        id=uuid.uuid4(),
        user_id=user.id,
        name=body.name,
        description=body.description,
        server_type=body.server_type,
        is_enabled=body.is_enabled,
        is_global=body.is_global,
        health_status="unknown",
        tools=[],
    )
    _store_config(state, server, body.config, {})
    db.add(server)
    await db.flush()
    log.info("mcp server %s (%s) registered by %s", server.id, server.server_type, user.id)
    return server


async def update(db: AsyncSession, state: AppState, user: User, server: McpServer, body: McpServerUpdate) -> McpServer:
    ensure_editable(user, server)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("is_global") is not None:
        policy.ensure_may_publish(user, changes["is_global"])
    if changes.get("name") is not None and changes["name"] != server.name:
        await _ensure_name_free(db, server.user_id, changes["name"], server.id)  # an admin may rename a global one
        server.name = changes["name"]
    new_type = changes.get("server_type") or server.server_type
    if "config" in changes or new_type != server.server_type:
        # http and sse share the config shape (url, headers): a switch between them keeps "***" headers.
        same_shape = new_type == server.server_type or {new_type, server.server_type} == {"http", "sse"}
        previous = stored_secrets(state, server) if same_shape else {}
        raw = changes.get("config") if changes.get("config") is not None else revealed_config(state, server)
        try:
            config = parse_config(new_type, raw).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise ValidationFailed(
                f"Invalid config for a {new_type} server", code="validation_error", details=_errors(exc)
            ) from exc
        await _vet(state, user, new_type, config)
        _store_config(state, server, config, previous)
        server.server_type = new_type
        server.health_status, server.last_health, server.tools = "unknown", None, []
    for key in ("description", "is_enabled", "is_global"):
        if key in changes and (changes[key] is not None or key == "description"):
            setattr(server, key, changes[key])
    await db.flush()
    return server


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Input values are left out on purpose: they may be secrets.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]


async def delete(db: AsyncSession, state: AppState, user: User, server: McpServer, *, force: bool) -> None:
    ensure_editable(user, server)
    if not force:
        users = await running_sessions_using(db, state, server.id)
        if users:
            raise Conflict(
                "A running session uses this MCP server; stop it first or delete with ?force=true",
                code="mcp_server_in_use",
                details={"session_ids": [str(s) for s in users]},
            )
    await db.delete(server)
    await db.flush()


async def running_sessions_using(db: AsyncSession, state: AppState, server_id: uuid.UUID) -> list[uuid.UUID]:
    wanted = str(server_id)
    found: list[uuid.UUID] = []
    for session_id, status, ids in await repo.sessions_with_servers(db, ALWAYS_RUNNING + RUNNING_IF_LIVE):
        if wanted not in ids:
            continue
        if status in ALWAYS_RUNNING or (state.agents is not None and state.agents.is_live(session_id)):
            found.append(session_id)
    return found


def ensure_runnable(state: AppState, server: McpServer) -> None:
    if server.server_type == "stdio":
        reason = policy.runnable_reason(state.settings, server.config["command"])
        if reason is not None:
            raise Forbidden(reason, code="mcp_stdio_not_runnable")


async def run_health_check(state: AppState, server_type: str, config: dict[str, Any]) -> health.HealthResult:
    """The check itself; it touches no database, so callers run it outside any transaction."""
    from agent_api.mcp_servers import health  # the `mcp` package (~9 MiB): loaded by the first check

    settings = state.settings
    return await health.check(
        server_type, config, limit_s=settings.mcp_health_timeout_s, allowed_hosts=settings.mcp_allowed_hosts
    )


async def record_health(db: AsyncSession, server_id: uuid.UUID, result: health.HealthResult) -> McpServer | None:
    server = await db.get(McpServer, server_id)
    if server is None:  # deleted while the check ran
        return None
    server.health_status = result.status
    server.last_health_check_at = utcnow()
    server.tools = result.tools
    server.last_health = {
        "latency_ms": result.latency_ms,
        "server_name": result.server_name,
        "server_version": result.server_version,
        "protocol_version": result.protocol_version,
        "resources": result.resources,
        "prompts": result.prompts,
        "error": result.error,
    }
    await db.flush()
    return server


@dataclass(frozen=True)
class AttachedServer:
    id: uuid.UUID
    name: str
    server_type: str
    config: dict[str, Any]  # secrets revealed: for the agent CLI only, never logged


async def load_attached(
    db: AsyncSession, state: AppState, user_id: uuid.UUID, ids: Sequence[str]
) -> list[AttachedServer]:
    """A session's servers that are still there and enabled, secrets decrypted; no network, so fine in a transaction.

    A server that has since gone or been disabled is left out (and logged) rather than failing the turn; the init
    message then shows which servers the agent has.
    """
    wanted = [uuid.UUID(i) for i in ids]
    servers = {s.id: s for s in await repo.get_visible_many(db, user_id, wanted)}
    attached: list[AttachedServer] = []
    for server_id in wanted:
        server = servers.get(server_id)
        if server is None or not server.is_enabled:
            log.warning("MCP server %s of a session is gone or disabled; not attached", server_id)
            continue
        attached.append(AttachedServer(server.id, server.name, server.server_type, revealed_config(state, server)))
    return attached


async def sdk_configs(state: AppState, attached: Sequence[AttachedServer]) -> dict[str, Any]:
    """`ClaudeAgentOptions.mcp_servers` for these servers, each checked again now: policy for stdio, SSRF for URLs.

    An HTTP or SSE server is given to the CLI as an address on the loopback MCP relay (`runtime.mcp_relay`), without
    its headers: the relay connects to the address checked here, adds the headers and follows no redirect. Without
    a running relay such servers are left out. Runs outside any transaction: resolving a host name can take a while.
    """
    configs: dict[str, Any] = {}
    for server in attached:
        config = server.config
        sdk: dict[str, Any]
        if server.server_type == "stdio":
            if policy.runnable_reason(state.settings, config["command"]) is not None:
                log.warning("MCP server %s may not run under the stdio policy; not attached", server.id)
                continue
            sdk = {"type": "stdio", "command": config["command"], "args": config.get("args", [])}
            if config.get("env"):
                sdk["env"] = config["env"]
        else:
            if state.mcp_relay is None:
                log.warning("MCP server %s not attached: the MCP relay is not running", server.id)
                continue
            try:
                url = await state.mcp_relay.register(
                    config["url"], config.get("headers", {}), state.settings.mcp_allowed_hosts
                )
            except ssrf.UnsafeUrl as exc:
                log.warning("MCP server %s refused at attach time: %s", server.id, exc)
                continue
            sdk = {"type": server.server_type, "url": url}
        name = server.name if server.name not in configs else f"{server.name}_{str(server.id)[:8]}"
        configs[name] = sdk
    return configs
