"""`/mcp-servers`: the 9 MCP server endpoints. Static paths come before `/{server_id}`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import ValidationError

from agent_api.auth.deps import CurrentUser
from agent_api.deps import DB, State, end_transaction
from agent_api.errors import ValidationFailed
from agent_api.mcp_servers import catalogue, desktop, service
from agent_api.mcp_servers import repository as repo
from agent_api.mcp_servers.deps import CreateBody, DesktopDocument, VisibleServer
from agent_api.mcp_servers.schemas import (
    FromTemplate,
    HealthCheckRead,
    ImportResult,
    McpServerCreate,
    McpServerPage,
    McpServerRead,
    McpServerUpdate,
    ServerType,
    TemplateRead,
    ToolInfo,
)
from agent_api.models.base import utcnow
from agent_api.pagination import Page, Pagination, page_of, paged
from agent_api.runtime import ssrf

router = APIRouter(prefix="/mcp-servers", tags=["mcp servers"])


@router.get("/templates", response_model=Page[TemplateRead])
async def list_templates(user: CurrentUser, params: Pagination) -> Page[TemplateRead]:
    """The catalogue of ready-made MCP server templates (filesystem, git, github, ...), paged; create a
    server from one with `POST /mcp-servers {"template": id, "values": {...}}`."""
    return page_of(list(catalogue.TEMPLATES.values()), params)


@router.post(
    "/import",
    response_model=ImportResult,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"mcpServers": {"type": "object", "maxProperties": desktop.MAX_IMPORT_ENTRIES}},
                        "required": ["mcpServers"],
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": 'The config as a JSON file: {"mcpServers": {...}}',
                            }
                        },
                        "required": ["file"],
                    }
                },
            }
        }
    },
)
async def import_servers(
    user: CurrentUser, document: DesktopDocument, db: DB, state: State, override_existing: bool = False
) -> ImportResult:
    """Import a Claude Desktop config (`{"mcpServers": {...}}`) as the JSON body or a multipart `file`;
    same-named servers are skipped unless `override_existing=true`. A bad entry is listed in `errors` and never fails
    the rest; 422 when the document is not such a config."""
    try:
        entries = desktop.entries_of(document)
        await _resolve_ahead(db, [e.get("url") for e in entries.values() if isinstance(e, dict)])
        return await desktop.import_config(db, state, user, document, override_existing=override_existing)
    except desktop.ImportFormatError as exc:
        raise ValidationFailed(str(exc), code="invalid_config_format") from exc


@router.get("/export")
async def export_servers(
    user: CurrentUser, db: DB, state: State, include_global: bool = False, include_secrets: bool = False
) -> dict[str, Any]:
    """The caller's servers in Claude Desktop format, secrets shown as `***`; `include_global=true` adds
    global ones, `include_secrets=true` reveals the real values of the caller's own servers."""
    return await desktop.export_config(db, state, user, include_global=include_global, include_secrets=include_secrets)


@router.get("", response_model=McpServerPage)
async def list_servers(
    user: CurrentUser,
    db: DB,
    params: Pagination,
    server_type: ServerType | None = None,
    is_enabled: bool | None = None,
) -> McpServerPage:
    """The caller's MCP servers plus global ones, by name; filters `server_type`, `is_enabled`. Secrets
    show as `***`."""
    stmt = repo.list_visible(user.id, server_type=server_type, is_enabled=is_enabled)
    return await paged(db, stmt, params, McpServerRead)


# The body is read by a dependency (`CreateBody`: a server, or a template to fill), so FastAPI cannot describe it.
_CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"anyOf": [McpServerCreate.model_json_schema(), FromTemplate.model_json_schema()]}
        }
    },
}


@router.post(
    "",
    response_model=McpServerRead,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": _CREATE_BODY},
)
async def create_server(user: CurrentUser, body: CreateBody, db: DB, state: State) -> McpServerRead:
    """Register an MCP server (201), or fill a catalogue template with `{"template", "values", "env"}`.
    403 for a stdio server the policy refuses or a global one by a non-admin; 409 `mcp_server_name_taken`; 422
    `mcp_url_not_allowed` for a private or loopback URL."""
    if isinstance(body, FromTemplate):
        try:
            body = McpServerCreate.model_validate(catalogue.fill(body))
        except (catalogue.TemplateError, ValidationError) as exc:
            message = str(exc) if isinstance(exc, catalogue.TemplateError) else "The filled template is invalid"
            raise ValidationFailed(message, code="invalid_template_values") from exc
    await _resolve_ahead(db, [body.config.get("url")])
    return McpServerRead.model_validate(await service.create(db, state, user, body))


@router.get("/{server_id}", response_model=McpServerRead)
async def get_server(server: VisibleServer) -> McpServerRead:
    """One MCP server the caller can see (own or global); 404 for another user's private server."""
    return McpServerRead.model_validate(server)


@router.patch("/{server_id}", response_model=McpServerRead)
async def update_server(
    server: VisibleServer, body: McpServerUpdate, user: CurrentUser, db: DB, state: State
) -> McpServerRead:
    """Change the fields sent (`config` replaces the whole config; `***` keeps a stored secret). 403 for a
    global server unless admin, 404 for another user's private one; 409 `mcp_server_name_taken`; 422 for a bad URL."""
    await _resolve_ahead(db, [(body.config or {}).get("url")])
    return McpServerRead.model_validate(await service.update(db, state, user, server, body))


async def _resolve_ahead(db: DB, urls: list[Any]) -> None:
    """Look the URLs' hosts up before the SSRF checks run in this request's transaction, with the transaction
    so far (authentication) committed: on SQLite it holds the write lock, and DNS can be slow."""
    wanted = [u for u in urls if isinstance(u, str)]
    if wanted:
        await end_transaction(db)
        await ssrf.prefetch(wanted)


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_server(
    server: VisibleServer, user: CurrentUser, db: DB, state: State, force: Annotated[bool, Query()] = False
) -> None:
    """Delete an MCP server (204). 409 `mcp_server_in_use` while a running session uses it, unless
    `?force=true`; 403 for a global server unless admin, 404 for another user's private one."""
    await service.delete(db, state, user, server, force=force)


@router.post("/{server_id}/health-check", response_model=HealthCheckRead)
async def health_check(server: VisibleServer, db: DB, state: State) -> HealthCheckRead:
    """Connect to the server, initialize and list its tools (and resources and prompts when offered); the
    result is stored as its last health. A failure answers `unhealthy`; 403 when stdio servers may not run here."""
    service.ensure_runnable(state, server)
    server_id, server_type, config = server.id, server.server_type, service.revealed_config(state, server)
    # The check can take seconds: the request's write transaction ends first, and the result is written after.
    await end_transaction(db)
    result = await service.run_health_check(state, server_type, config)
    async with state.db.transaction() as fresh:
        await service.record_health(fresh, server_id, result)
    return HealthCheckRead(
        server_id=server_id,
        status="healthy" if result.status == "healthy" else "unhealthy",
        checked_at=utcnow(),
        latency_ms=result.latency_ms,
        server_name=result.server_name,
        server_version=result.server_version,
        protocol_version=result.protocol_version,
        tools=[ToolInfo.model_validate(t) for t in result.tools],
        resources=result.resources,
        prompts=result.prompts,
        error=result.error,
    )
