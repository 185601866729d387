"""The error responses each operation really gives, written into the OpenAPI document in the one error shape.

FastAPI documents only the 422 of its own validation, and with its own `HTTPValidationError` body, which is not
what this server sends. `document_errors` replaces it and adds the rest: the statuses every operation of a kind
can give follow from rules (authenticated -> 401, a path id -> 404, a body -> 413 and 422), and the ones that come
from a domain rule (403, 409, 402, 429, 400, 503) are listed per operation below. The route matrix
(tests/security/test_route_matrix.py) and the fuzzer (tests/security/test_fuzz.py) fail when an answer a route
gives is not documented here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

API_PREFIX = "/api/v1"
ERROR_SCHEMA_NAME = "ErrorResponse"


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable snake_case code, e.g. `not_found`, `session_busy`, `invalid_token`")
    message: str = Field(description="A human-readable explanation")
    details: Any = Field(description="Structured context, e.g. validation errors; may be null")
    request_id: str | None = Field(description="The request's `X-Request-ID`, for support and logs")


class ErrorResponse(BaseModel):
    """The body of every error answer (DESIGN.md, Contracts)."""

    error: ErrorDetail
    detail: str = Field(description="The same message, for clients that follow FastAPI's convention")


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked credentials",
    402: "Monthly budget exhausted (`budget_exceeded`)",
    403: "Not allowed for this caller",
    404: "Not found, or owned by another user",
    409: "Conflicts with the resource's current state",
    413: "Request body, or the thing to copy or send, too large",
    422: "Invalid request. Whatever the schema says, no text in a JSON body may hold a NUL (\\u0000) character, and"
    " no number may be NaN or Infinity (`invalid_characters`)",
    429: "Too many requests; see `Retry-After`",
    503: "Unavailable (shutting down, or a health check failed)",
}

# Statuses that come from domain rules rather than from the shape of the operation, by (method, path below
# /api/v1). Keep in step with the services: the route matrix and the fuzzer check the answers against this.
_QUERY = {402, 409, 429, 503}
_DOMAIN_ERRORS: dict[tuple[str, str], set[int]] = {
    ("post", "/auth/login"): {429},
    ("post", "/auth/logout"): {400},
    ("post", "/sessions"): {402, 503},
    ("delete", "/sessions/{session_id}"): {409},
    ("post", "/sessions/{session_id}/query"): _QUERY,
    ("post", "/sessions/{session_id}/pause"): {409},
    ("post", "/sessions/{session_id}/resume"): {409, 503},
    ("post", "/sessions/{session_id}/fork"): {409, 413},
    ("post", "/sessions/{session_id}/archive"): {409, 413},
    ("post", "/sessions/{session_id}/permissions/{request_id}"): {409},
    ("get", "/sessions/{session_id}/workdir/download"): {413},
    ("get", "/sessions/{session_id}/files"): {400},
    ("get", "/sessions/{session_id}/files/content"): {400, 413},
    ("put", "/session-templates/{template_id}"): {403},
    ("delete", "/session-templates/{template_id}"): {403},
    ("patch", "/session-templates/{template_id}/sharing"): {403},
    ("post", "/tasks/{task_id}/execute"): {402, 409, 429, 503},
    ("post", "/tasks/executions/{execution_id}/cancel"): {409},
    ("get", "/reports/{report_id}/download"): {400},
    ("post", "/mcp-servers"): {400, 403, 409},
    ("post", "/mcp-servers/import"): {403},
    ("patch", "/mcp-servers/{server_id}"): {403, 409},
    ("delete", "/mcp-servers/{server_id}"): {403, 409},
    ("post", "/mcp-servers/{server_id}/health-check"): {403, 409},
    ("post", "/admin/users"): {409},
    ("patch", "/admin/users/{user_id}"): {409},
    ("post", "/webhooks"): {403, 409},
    ("patch", "/webhooks/{webhook_id}"): {409},
    ("post", "/webhooks/{webhook_id}/rotate-secret"): {409},
    ("post", "/webhooks/{webhook_id}/test"): {409},
    ("get", "/monitoring/health"): {503},
    ("get", "/monitoring/health/database"): {503},
    ("get", "/monitoring/health/storage"): {503},
}
# Answers 401 although it takes no bearer token: the credentials or the refresh token are in the request.
_CREDENTIAL_ROUTES = {("post", "/auth/login"), ("post", "/auth/refresh")}


def statuses_for(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer: the rules for its shape and its domain's own."""
    local = path.removeprefix(API_PREFIX)
    found = set(_DOMAIN_ERRORS.get((method, local), set()))
    has_body = "requestBody" in operation
    if operation.get("security") or (method, local) in _CREDENTIAL_ROUTES:
        found.add(401)
    if local.startswith("/admin/"):
        found.add(403)
    if "{" in local:
        found.add(404)
    if has_body:
        found |= {413, 422}
    if operation.get("parameters") or has_body:
        # A body that is not JSON, or text that is not UTF-8 or holds control characters (InputHygieneMiddleware).
        found |= {400, 422}
    return found


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses, with the one error schema, to every operation of an OpenAPI document (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(
        {
            name: definition
            for name, definition in ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            .pop("$defs", {})
            .items()
        }
    )
    components[ERROR_SCHEMA_NAME] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components[ERROR_SCHEMA_NAME].pop("$defs", None)
    # FastAPI's validation error bodies are not what the server sends; nothing refers to them once replaced.
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in sorted(statuses_for(method, path, operation)):
                existing = responses.get(str(status), {})
                description = existing.get("description")
                if not description or description == "Validation Error":  # FastAPI's, which says nothing
                    description = _DESCRIPTIONS[status]
                responses[str(status)] = {
                    "description": description,
                    "content": {"application/json": {"schema": ref}},
                }
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) return the document with its error responses."""
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(app)  # built once and cached on the app by FastAPI
        if not documented or documented[0] is not schema:
            documented[:] = [document_errors(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
