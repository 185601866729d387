"""Claude Desktop's config format, `{"mcpServers": {name: entry}}`: import (entry by entry) and export."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_api.errors import AppError
from agent_api.mcp_servers import repository as repo
from agent_api.mcp_servers import service
from agent_api.mcp_servers.schemas import ImportFailure, ImportResult, McpServerCreate, McpServerUpdate
from agent_api.mcp_servers.secrets import REDACTED
from agent_api.models import McpServer, User
from agent_api.state import AppState

log = logging.getLogger("agent_api.mcp_servers")

MAX_IMPORT_ENTRIES = 200
_REMOTE_TYPES = {"http": "http", "streamable-http": "http", "streamable_http": "http", "sse": "sse"}


class ImportFormatError(ValueError):
    pass


def entries_of(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("mcpServers"), dict):
        raise ImportFormatError('expected a Claude Desktop config: {"mcpServers": {"name": {...}}}')
    entries: dict[str, Any] = document["mcpServers"]
    if len(entries) > MAX_IMPORT_ENTRIES:
        raise ImportFormatError(f"at most {MAX_IMPORT_ENTRIES} servers per import")
    return entries


def to_create(name: str, entry: Any) -> McpServerCreate:
    """One entry as a create body; raises ValueError (or pydantic's ValidationError) with a reason."""
    if not isinstance(entry, dict):
        raise ValueError("the entry is not an object")
    common: dict[str, Any] = {
        "name": name,
        "description": entry.get("description"),
        "is_enabled": not entry.get("disabled", False),
    }
    if "command" in entry:
        config = {k: entry[k] for k in ("command", "args", "env", "cwd") if entry.get(k) is not None}
        return McpServerCreate.model_validate({**common, "server_type": "stdio", "config": config})
    if "url" in entry:
        kind = _REMOTE_TYPES.get(str(entry.get("type", "http")).lower())
        if kind is None:
            raise ValueError(f"unknown transport type {entry.get('type')!r}")
        config = {"url": entry["url"], "headers": entry.get("headers") or {}}
        return McpServerCreate.model_validate({**common, "server_type": kind, "config": config})
    raise ValueError("the entry has neither a command nor a url")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        # Field paths and messages only: the input may hold a secret.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
        return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    if isinstance(exc, AppError):
        return exc.message
    return str(exc)


def _fill_redacted(body: McpServerCreate, existing: McpServer | None) -> int:
    """Secrets exported as "***" keep an existing server's value when replaced, else become empty; how many did."""
    blanked = 0
    kept: dict[str, dict[str, str]] = {}
    if existing is not None and existing.server_type == body.server_type:
        kept = {f: dict.fromkeys(existing.config.get(f, {}), REDACTED) for f in ("env", "headers")}
    for field in ("env", "headers"):
        values = body.config.get(field) or {}
        for key, value in values.items():
            if value == REDACTED and key not in kept.get(field, {}):
                values[key] = ""
                blanked += 1
    return blanked


async def import_config(
    db: AsyncSession, state: AppState, user: User, document: Any, *, override_existing: bool
) -> ImportResult:
    imported: list[str] = []
    skipped: list[str] = []
    errors: list[ImportFailure] = []
    blanked = 0
    for name, entry in entries_of(document).items():
        try:
            body = to_create(str(name), entry)
            existing = await repo.get_by_name(db, user.id, body.name)
            if existing is not None and not override_existing:
                skipped.append(body.name)
                continue
            blanked += _fill_redacted(body, existing)
            # A savepoint per entry: one that fails leaves the others in place.
            async with db.begin_nested():
                if existing is None:
                    await service.create(db, state, user, body)
                else:
                    update = McpServerUpdate(**body.model_dump(exclude={"is_global"}))
                    await service.update(db, state, user, existing, update)
            imported.append(body.name)
        except (ValueError, AppError) as exc:
            errors.append(ImportFailure(server=str(name), error=_reason(exc)))
    summary = f"{len(imported)} imported, {len(skipped)} skipped (name exists), {len(errors)} failed"
    if blanked:
        summary += f"; {blanked} redacted secret value(s) left empty, set them with PATCH"
    return ImportResult(imported=imported, skipped=skipped, errors=errors, summary=summary)


def _entry(state: AppState, server: McpServer, with_secrets: bool) -> dict[str, Any]:
    config = service.revealed_config(state, server) if with_secrets else dict(server.config)
    if server.server_type == "stdio":
        entry: dict[str, Any] = {"command": config["command"], "args": list(config.get("args", []))}
        entry["env"] = dict(config.get("env", {}))
        if config.get("cwd"):
            entry["cwd"] = config["cwd"]
    else:
        entry = {"type": server.server_type, "url": config["url"], "headers": dict(config.get("headers", {}))}
    # Not read by Claude Desktop, kept so an export imports back unchanged.
    if server.description:
        entry["description"] = server.description
    if not server.is_enabled:
        entry["disabled"] = True
    return entry


async def export_config(
    db: AsyncSession, state: AppState, user: User, *, include_global: bool, include_secrets: bool
) -> dict[str, Any]:
    servers = (
        list(await db.scalars(repo.list_visible(user.id))) if include_global else await repo.list_owned(db, user.id)
    )
    out: dict[str, Any] = {}
    # The caller's own servers keep their names; a global one with the same name is the one suffixed.
    servers.sort(key=lambda server: server.user_id != user.id)
    for server in servers:
        if server.user_id != user.id and not server.is_global:
            continue
        name = server.name if server.name not in out else f"{server.name}_{str(server.id)[:8]}"
        # Secrets go only to their owner, never to someone exporting a global server they can merely see.
        out[name] = _entry(state, server, include_secrets and server.user_id == user.id)
    if include_secrets:
        log.info("user %s exported MCP servers with secrets", user.id)
    return {"mcpServers": out}
