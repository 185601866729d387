"""The route matrix (DESIGN security properties 1 and 2), driven by the OpenAPI document.

Every operation the document lists must have a row in `OPS`, and every row an operation: a route added without
deciding who may call it fails here the day it is added. For each row the matrix checks, with real resources
made by one user (Alice) and called by another (Bob):

- no credentials: 401 in the error shape (public routes are listed as such);
- another user's resource named in the path: 404, never 403, and nothing changes;
- a resource Bob may see but not change (Alice's public template, an admin's global MCP server): 403;
- admin routes: 403 to a non-admin;
- every answer is one the operation documents (see `agent_api.openapi_errors`).

Bodies carrying owner, role, budget, cost or status fields change nothing (`TestMassAssignment`). Routes outside
the document (the WebSocket, the console, `/metrics`) have rows in `EXTRA_ROUTES`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from agent_api.app import create_app
from agent_api.models import TaskExecution
from agent_api.sessions import service as sessions_service
from agent_api.sessions.schemas import SessionCreate
from tests.conftest import UserAccount, Users, app_state, assert_error_shape, make_client, make_settings
from tests.streaming.conftest import close_code, server_url  # noqa: F401  (the WebSocket needs a real server)

API = "/api/v1"
LOOPBACK_TARGET = "http://127.0.0.1:9"  # the discard port: allowlisted below, and nothing listens there

Access = Literal["public", "user", "admin"]


@dataclass(frozen=True)
class Op:
    access: Access
    body: Any = None
    # Another user's resource named in the path answers 404 (all rows with a path id do, unless False).
    foreign_404: bool = True
    # Visible to others but changeable only by its owner (or an admin): 403 for Bob on the shared resource.
    shared_403: str | None = None


_SESSION_BODY = {"name": "bob's"}
_TEMPLATE_BODY = {"name": "t"}
_TASK_BODY = {"name": "t", "prompt_template": "say hi"}
_MCP_BODY = {"name": "m", "server_type": "http", "config": {"url": f"{LOOPBACK_TARGET}/mcp"}}
_HOOK_BODY = {"url": f"{LOOPBACK_TARGET}/hook", "events": ["turn.completed"]}

# (method, path below /api/v1) -> who may call it. Must equal the operations of the OpenAPI document exactly.
OPS: dict[tuple[str, str], Op] = {
    ("POST", "/auth/login"): Op("public"),
    ("POST", "/auth/refresh"): Op("public"),
    ("GET", "/auth/me"): Op("user"),
    ("POST", "/auth/logout"): Op("user"),
    ("POST", "/auth/logout-all"): Op("user"),
    ("POST", "/auth/download-ticket"): Op("user", {"path": "/api/v1/sessions/{session_id}/workdir/download"}),
    ("POST", "/auth/api-keys"): Op("user", {"name": "k"}),
    ("GET", "/auth/api-keys"): Op("user"),
    ("DELETE", "/auth/api-keys/{key_id}"): Op("user"),
    ("GET", "/monitoring/health"): Op("public"),
    ("GET", "/monitoring/health/database"): Op("public"),
    ("GET", "/monitoring/health/sdk"): Op("public"),
    ("GET", "/monitoring/health/storage"): Op("public"),
    ("GET", "/monitoring/costs/user/{user_id}"): Op("user"),
    ("GET", "/monitoring/costs/budget/{user_id}"): Op("user"),
    ("GET", "/monitoring/metrics/session/{session_id}"): Op("user"),
    ("POST", "/sessions"): Op("user", _SESSION_BODY),
    ("GET", "/sessions"): Op("user"),
    ("GET", "/sessions/{session_id}"): Op("user"),
    ("DELETE", "/sessions/{session_id}"): Op("user"),
    ("POST", "/sessions/{session_id}/query"): Op("user", {"message": "hi"}),
    ("POST", "/sessions/{session_id}/interrupt"): Op("user"),
    ("POST", "/sessions/{session_id}/pause"): Op("user"),
    ("POST", "/sessions/{session_id}/resume"): Op("user"),
    ("POST", "/sessions/{session_id}/fork"): Op("user"),
    ("POST", "/sessions/{session_id}/archive"): Op("user"),
    ("GET", "/sessions/{session_id}/archive"): Op("user"),
    ("GET", "/sessions/{session_id}/messages"): Op("user"),
    ("GET", "/sessions/{session_id}/tool-calls"): Op("user"),
    ("GET", "/sessions/{session_id}/hooks"): Op("user"),
    ("GET", "/sessions/{session_id}/permissions"): Op("user"),
    ("POST", "/sessions/{session_id}/permissions/{request_id}"): Op("user", {"decision": "allow"}),
    ("GET", "/sessions/{session_id}/metrics/snapshots"): Op("user"),
    ("GET", "/sessions/{session_id}/metrics/current"): Op("user"),
    ("GET", "/sessions/{session_id}/workdir/download"): Op("user"),
    ("GET", "/sessions/{session_id}/files"): Op("user"),
    ("GET", "/sessions/{session_id}/files/content"): Op("user"),
    ("POST", "/sessions/{session_id}/stream-ticket"): Op("user"),
    ("GET", "/sessions/{session_id}/events"): Op("user"),
    ("POST", "/sessions/{session_id}/report"): Op("user"),
    ("POST", "/session-templates"): Op("user", _TEMPLATE_BODY),
    ("GET", "/session-templates"): Op("user"),
    ("POST", "/session-templates/search"): Op("user", {}),
    ("GET", "/session-templates/popular/top"): Op("user"),
    ("GET", "/session-templates/{template_id}"): Op("user"),
    ("PUT", "/session-templates/{template_id}"): Op("user", _TEMPLATE_BODY, shared_403="public_template"),
    ("DELETE", "/session-templates/{template_id}"): Op("user", shared_403="public_template"),
    ("PATCH", "/session-templates/{template_id}/sharing"): Op(
        "user", {"is_public": False}, shared_403="public_template"
    ),
    ("GET", "/tasks/executions/{execution_id}"): Op("user"),
    ("POST", "/tasks/executions/{execution_id}/cancel"): Op("user"),
    ("POST", "/tasks"): Op("user", _TASK_BODY),
    ("GET", "/tasks"): Op("user"),
    ("GET", "/tasks/{task_id}"): Op("user"),
    ("PATCH", "/tasks/{task_id}"): Op("user", {"name": "x"}),
    ("DELETE", "/tasks/{task_id}"): Op("user"),
    ("POST", "/tasks/{task_id}/execute"): Op("user", {"variables": {}}),
    ("GET", "/tasks/{task_id}/executions"): Op("user"),
    ("GET", "/reports"): Op("user"),
    ("GET", "/reports/schema"): Op("user"),
    ("GET", "/reports/{report_id}"): Op("user"),
    ("GET", "/reports/{report_id}/download"): Op("user"),
    ("GET", "/reports/{report_id}/view"): Op("user"),
    ("GET", "/mcp-servers/templates"): Op("user"),
    ("POST", "/mcp-servers/import"): Op("user", {"mcpServers": {}}),
    ("GET", "/mcp-servers/export"): Op("user"),
    ("GET", "/mcp-servers"): Op("user"),
    ("POST", "/mcp-servers"): Op("user", _MCP_BODY),
    ("GET", "/mcp-servers/{server_id}"): Op("user"),
    ("PATCH", "/mcp-servers/{server_id}"): Op("user", {"description": "x"}, shared_403="global_server"),
    ("DELETE", "/mcp-servers/{server_id}"): Op("user", shared_403="global_server"),
    # Probing a global server is reading it, not changing it: a user may check one they can use (as today).
    ("POST", "/mcp-servers/{server_id}/health-check"): Op("user"),
    ("GET", "/admin/stats"): Op("admin"),
    ("GET", "/admin/sessions"): Op("admin"),
    ("GET", "/admin/users"): Op("admin"),
    ("POST", "/admin/users"): Op("admin", {"username": "mallory", "password": "a-long-password"}),
    ("GET", "/admin/users/{user_id}"): Op("admin"),
    ("PATCH", "/admin/users/{user_id}"): Op("admin", {"is_admin": True}),
    ("POST", "/admin/users/{user_id}/reset-password"): Op("admin"),
    ("GET", "/admin/audit"): Op("admin"),
    ("POST", "/webhooks"): Op("user", _HOOK_BODY),
    ("GET", "/webhooks"): Op("user"),
    ("GET", "/webhooks/{webhook_id}"): Op("user"),
    ("PATCH", "/webhooks/{webhook_id}"): Op("user", {"description": "x"}),
    ("DELETE", "/webhooks/{webhook_id}"): Op("user"),
    ("POST", "/webhooks/{webhook_id}/rotate-secret"): Op("user"),
    ("POST", "/webhooks/{webhook_id}/test"): Op("user"),
    ("GET", "/webhooks/{webhook_id}/deliveries"): Op("user"),
}

# Served but not in the OpenAPI document; each is checked by a test below.
EXTRA_ROUTES: dict[tuple[str, str], Access] = {
    ("WEBSOCKET", "/api/v1/sessions/{session_id}/stream"): "user",  # closes 4401 / 4404 instead of HTTP answers
    ("GET", "/metrics"): "public",  # as it behaves today with no AGENT_API_METRICS_TOKEN
    ("GET", "/"): "public",  # the console's page; its data comes from the API
    ("GET", "/console/{asset}"): "public",
}
# Framework routes, public by nature.
FRAMEWORK_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

_PARAM = re.compile(r"{(\w+)}")


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        webhook_allowed_hosts=["127.0.0.1"],
        mcp_allowed_hosts=["127.0.0.1"],
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@dataclass
class World:
    alice: UserAccount
    bob: UserAccount
    admin: UserAccount
    ids: dict[str, str]  # path parameter name -> Alice's resource
    shared: dict[str, str]  # visible to Bob, not changeable by him

    def path(self, template: str, ids: dict[str, str] | None = None) -> str:
        values = ids or self.ids
        return API + _PARAM.sub(lambda m: values[m.group(1)], template)


async def _json(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def world(app: object) -> AsyncIterator[World]:
    async with make_client(app) as c:
        users = Users(app, c)
        alice, bob, admin = await users.create(), await users.create(), await users.create(admin=True)
        state = app_state(app)
        # Made through the service without the agent warm-up the route starts: nothing here needs an agent.
        async with state.db.transaction() as db:
            from agent_api.models import User

            owner = await db.get(User, uuid.UUID(alice.id))
            created = await sessions_service.create_session(db, state, owner, SessionCreate(name="alice's"))
            session_id = str(created.session.id)
        h = alice.headers
        template = await _json(await c.post(f"{API}/session-templates", json={"name": "private"}, headers=h))
        public = await _json(
            await c.post(f"{API}/session-templates", json={"name": "shared", "is_public": True}, headers=h)
        )
        task = await _json(await c.post(f"{API}/tasks", json=_TASK_BODY, headers=h))
        async with state.db.transaction() as db:
            execution = TaskExecution(
                task_id=uuid.UUID(task["id"]), user_id=uuid.UUID(alice.id), status="completed", prompt="say hi"
            )
            db.add(execution)
            await db.flush()
            execution_id = str(execution.id)
        report = await _json(await c.post(f"{API}/sessions/{session_id}/report", json={}, headers=h))
        server = await _json(await c.post(f"{API}/mcp-servers", json=_MCP_BODY, headers=h))
        global_server = await _json(
            await c.post(
                f"{API}/mcp-servers", json={**_MCP_BODY, "name": "global", "is_global": True}, headers=admin.headers
            )
        )
        hook = await _json(await c.post(f"{API}/webhooks", json=_HOOK_BODY, headers=h))
        key = await _json(await c.post(f"{API}/auth/api-keys", json={"name": "alice's"}, headers=h))
        ids = {
            "session_id": session_id,
            "template_id": template["id"],
            "task_id": task["id"],
            "execution_id": execution_id,
            "report_id": report["id"],
            "server_id": server["id"],
            "webhook_id": hook["id"],
            "key_id": key["id"],
            "user_id": alice.id,
            "request_id": str(uuid.uuid4()),
        }
        shared = {"public_template": public["id"], "global_server": global_server["id"]}
        yield World(alice, bob, admin, ids, shared)


# What Alice reads back before and after Bob's attempts: nothing of it may change.
ALICE_VIEWS = [
    "/sessions/{session_id}",
    "/session-templates/{template_id}",
    "/tasks/{task_id}",
    "/tasks/executions/{execution_id}",
    "/reports/{report_id}",
    "/webhooks/{webhook_id}",
    "/auth/api-keys",
    "/auth/me",
    "/sessions",
    "/tasks",
]
_VOLATILE = {"last_used_at", "health_status", "last_health", "last_health_check_at", "mcp_status", "tools"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def _alice_sees(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    seen = {}
    for view in [*ALICE_VIEWS, "/mcp-servers/{server_id}"]:
        r = await client.get(world.path(view), headers=world.alice.headers)
        seen[view] = _stable(await _json(r, 200))
    for name, kind in (("public_template", "session-templates"), ("global_server", "mcp-servers")):
        r = await client.get(f"{API}/{kind}/{world.shared[name]}", headers=world.admin.headers)
        seen[name] = _stable(await _json(r, 200))
    return seen


def _documented(app: object, method: str, template: str) -> set[int]:
    operation = app.openapi()["paths"][API + template][method.lower()]  # type: ignore[attr-defined]
    return {int(code) for code in operation["responses"] if code.isdigit()}


async def _call(client: httpx.AsyncClient, method: str, url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await client.request(method, url, json=body, headers=headers)


class TestTheTableCoversEveryRoute:
    def test_every_documented_operation_has_exactly_one_row(self, app: object) -> None:
        document = app.openapi()  # type: ignore[attr-defined]
        operations = {
            (method.upper(), path.removeprefix(API)) for path, ops in document["paths"].items() for method in ops
        }
        missing = operations - OPS.keys()
        stale = OPS.keys() - operations
        assert not missing, f"operations with no expectation in OPS: {sorted(missing)}"
        assert not stale, f"rows in OPS for operations that no longer exist: {sorted(stale)}"

    def test_every_route_outside_the_document_is_listed(self, app: object) -> None:
        documented = {path for path in app.openapi()["paths"]}  # type: ignore[attr-defined]
        served: set[tuple[str, str]] = set()
        for path, route in _flat_routes(app.routes):  # type: ignore[attr-defined]
            if path in documented or path in FRAMEWORK_ROUTES:
                continue
            methods = getattr(route, "methods", None) or {"WEBSOCKET"}
            served |= {(m, path) for m in methods if m != "HEAD"}
        # The console's asset route is `{asset:path}` in the router.
        served = {(m, p.replace("{asset:path}", "{asset}")) for m, p in served}
        assert served == set(EXTRA_ROUTES), f"routes outside the OpenAPI document: {sorted(served)}"


def _flat_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(full path, route) of every route, through included routers (FastAPI keeps them nested)."""
    flat: list[tuple[str, Any]] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            flat += _flat_routes(list(included.routes), prefix + route.include_context.prefix)
        else:
            flat.append((prefix + route.path, route))
    return flat


_PROTECTED = sorted(k for k, op in OPS.items() if op.access != "public")
_FOREIGN = sorted(k for k, op in OPS.items() if op.access == "user" and "{" in k[1] and op.foreign_404)
_ADMIN = sorted(k for k, op in OPS.items() if op.access == "admin")
_SHARED = sorted(k for k, op in OPS.items() if op.shared_403)


def _id(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


class TestWithoutCredentials:
    @pytest.mark.parametrize("key", _PROTECTED, ids=_id)
    async def test_401(self, app: object, client: httpx.AsyncClient, world: World, key: tuple[str, str]) -> None:
        method, template = key
        r = await _call(client, method, world.path(template), OPS[key].body, {})
        assert_error_shape(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert 401 in _documented(app, method, template)

    @pytest.mark.parametrize("key", _PROTECTED, ids=_id)
    async def test_401_with_a_malformed_bearer(
        self, app: object, client: httpx.AsyncClient, world: World, key: tuple[str, str]
    ) -> None:
        method, template = key
        r = await _call(client, method, world.path(template), OPS[key].body, {"Authorization": "Bearer nonsense"})
        assert_error_shape(r, 401, "invalid_token")

    async def test_public_routes_answer_without_credentials(self, client: httpx.AsyncClient) -> None:
        for method, template in sorted(k for k, op in OPS.items() if op.access == "public"):
            r = await client.request(method, API + template, json={})
            # Login and refresh want credentials in the body; the health routes answer.
            assert r.status_code in ({422} if template.startswith("/auth/") else {200}), (template, r.text)

    async def test_metrics_and_console_are_public(self, app: object, client: httpx.AsyncClient) -> None:
        # Without a token, /metrics needs no credentials from loopback, and is an unknown path to others.
        async with make_client(app, "127.0.0.1") as local:
            assert (await local.get("/metrics")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/console/js/app.js")).status_code in (200, 404)

    async def test_the_websocket_closes_4401(self, server_url: str, world: World) -> None:  # noqa: F811
        assert await close_code(server_url, world.ids["session_id"]) == 4401
        assert await close_code(server_url, world.ids["session_id"], token="nonsense") == 4401


@pytest.fixture(scope="module")
async def before(app: object, world: World) -> dict[str, Any]:
    async with make_client(app) as c:
        return await _alice_sees(c, world)


class TestAnotherUsersResource:
    """Bob names Alice's resources: 404, exactly as for one that does not exist, and nothing changes."""

    @pytest.mark.parametrize("key", _FOREIGN, ids=_id)
    async def test_404(
        self, app: object, client: httpx.AsyncClient, world: World, before: dict[str, Any], key: tuple[str, str]
    ) -> None:
        method, template = key
        body = _fill(OPS[key].body, world)
        r = await _call(client, method, world.path(template), body, world.bob.headers)
        assert_error_shape(r, 404)
        assert 404 in _documented(app, method, template)
        # The same route with an id that does not exist answers the same way.
        unknown = {name: str(uuid.uuid4()) for name in world.ids}
        r2 = await _call(client, method, world.path(template, unknown), body, world.bob.headers)
        assert_error_shape(r2, 404, r.json()["error"]["code"])

    async def test_nothing_changed(self, app: object, world: World, before: dict[str, Any]) -> None:
        # Runs after the 404 cases of this class (pytest keeps definition order within a class).
        async with make_client(app) as c:
            assert await _alice_sees(c, world) == before

    async def test_lists_hold_only_the_callers_rows(self, client: httpx.AsyncClient, world: World) -> None:
        for what in ("sessions", "tasks", "reports", "webhooks", "auth/api-keys", "mcp-servers", "session-templates"):
            r = await client.get(f"{API}/{what}", params={"page_size": 100}, headers=world.bob.headers)
            mine = {item["id"] for item in (await _json(r, 200))["items"]}
            assert not mine & set(world.ids.values()), what

    async def test_the_websocket_closes_4404(self, server_url: str, world: World) -> None:  # noqa: F811
        assert await close_code(server_url, world.ids["session_id"], token=world.bob.access_token) == 4404

    async def test_a_download_ticket_for_another_users_file_opens_nothing(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        path = world.path("/sessions/{session_id}/workdir/download")
        r = await client.post(f"{API}/auth/download-ticket", json={"path": path}, headers=world.bob.headers)
        url = (await _json(r)).get("url")
        assert_error_shape(await client.get(url), 404)

    async def test_costs_of_another_user_by_id(self, client: httpx.AsyncClient, world: World) -> None:
        r = await client.get(f"{API}/monitoring/costs/user/{world.alice.id}", headers=world.bob.headers)
        assert_error_shape(r, 404)


class TestSharedButNotChangeable:
    @pytest.mark.parametrize("key", _SHARED, ids=_id)
    async def test_403(self, app: object, client: httpx.AsyncClient, world: World, key: tuple[str, str]) -> None:
        method, template = key
        shared = OPS[key].shared_403
        assert shared is not None
        name = _PARAM.findall(template)[0]
        r = await _call(
            client, method, world.path(template, {name: world.shared[shared]}), OPS[key].body, world.bob.headers
        )
        assert_error_shape(r, 403)
        assert 403 in _documented(app, method, template)

    async def test_bob_can_still_read_them(self, client: httpx.AsyncClient, world: World) -> None:
        for kind, name in (("session-templates", "public_template"), ("mcp-servers", "global_server")):
            r = await client.get(f"{API}/{kind}/{world.shared[name]}", headers=world.bob.headers)
            assert r.status_code == 200, r.text


class TestAdminRoutes:
    @pytest.mark.parametrize("key", _ADMIN, ids=_id)
    async def test_403_to_a_user(
        self, app: object, client: httpx.AsyncClient, world: World, key: tuple[str, str]
    ) -> None:
        method, template = key
        r = await _call(client, method, world.path(template), OPS[key].body, world.bob.headers)
        assert_error_shape(r, 403, "admin_required")
        assert 403 in _documented(app, method, template)

    async def test_bob_is_still_a_user_and_mallory_does_not_exist(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        me = await _json(await client.get(f"{API}/auth/me", headers=world.bob.headers), 200)
        assert me["role"] == "user"
        alice = await _json(await client.get(world.path("/admin/users/{user_id}"), headers=world.admin.headers), 200)
        assert alice["is_admin"] is False and alice["role"] == "user"
        users = await client.get(f"{API}/admin/users", params={"page_size": 100}, headers=world.admin.headers)
        assert "mallory" not in {u["username"] for u in (await _json(users, 200))["items"]}


def _fill(body: Any, world: World) -> Any:
    if isinstance(body, dict):
        return {k: _fill(v, world) for k, v in body.items()}
    if isinstance(body, str) and "{" in body:
        return world.path(body.removeprefix(API))
    return body


# Fields no client may set; sent with every create and update below.
FORBIDDEN_FIELDS: dict[str, Any] = {
    "owner_id": None,  # filled with Alice's id
    "user_id": None,
    "role": "admin",
    "is_admin": True,
    "budget": 1_000_000,
    "monthly_budget_usd": 1_000_000,
    "cost_usd": 123.45,
    "total_cost_usd": 123.45,
    "status": "completed",
    "usage_count": 999,
    "execution_count": 999,
    "message_count": 999,
    "trigger_type": "scheduled",
}


def _poisoned(body: dict[str, Any], world: World) -> dict[str, Any]:
    extra = {k: (world.alice.id if v is None else v) for k, v in FORBIDDEN_FIELDS.items()}
    return {**extra, **body}


def _assert_untouched(item: dict[str, Any], owner: UserAccount) -> None:
    if "user_id" in item:
        assert item["user_id"] == owner.id, item
    for field in ("total_cost_usd", "cost_usd"):
        if field in item:
            assert item[field] == 0, item
    for field in ("usage_count", "execution_count", "message_count"):
        if field in item:
            assert item[field] == 0, item
    assert item.get("role") in (None, "user"), item
    assert item.get("is_admin") in (None, False), item


class TestMassAssignment:
    """Bob sends owner, role, budget, cost and status fields: they are ignored, and reading back proves it."""

    @pytest.mark.parametrize(
        ("create", "update"),
        [
            (("POST", "/session-templates", _TEMPLATE_BODY), ("PUT", "/session-templates/{id}", _TEMPLATE_BODY)),
            (("POST", "/tasks", _TASK_BODY), ("PATCH", "/tasks/{id}", {"name": "y"})),
            (("POST", "/mcp-servers", {**_MCP_BODY, "name": "bobs"}), ("PATCH", "/mcp-servers/{id}", {})),
            (("POST", "/webhooks", _HOOK_BODY), ("PATCH", "/webhooks/{id}", {})),
        ],
        ids=["templates", "tasks", "mcp-servers", "webhooks"],
    )
    async def test_create_and_update(
        self,
        client: httpx.AsyncClient,
        world: World,
        create: tuple[str, str, dict[str, Any]],
        update: tuple[str, str, dict[str, Any]],
    ) -> None:
        bob = world.bob
        method, path, body = create
        created = await _json(
            await client.request(method, API + path, json=_poisoned(body, world), headers=bob.headers)
        )
        _assert_untouched(created, bob)
        url = API + update[1].format(id=created["id"])
        updated = await _json(
            await client.request(update[0], url, json=_poisoned(update[2], world), headers=bob.headers), 200
        )
        _assert_untouched(updated, bob)
        again = await _json(await client.get(url, headers=bob.headers), 200)
        _assert_untouched(again, bob)
        # Alice does not see it: it was not made hers.
        assert (await client.get(url, headers=world.alice.headers)).status_code == 404

    async def test_session(self, client: httpx.AsyncClient, world: World) -> None:
        bob = world.bob
        created = await _json(
            await client.post(f"{API}/sessions", json=_poisoned({"name": "b"}, world), headers=bob.headers)
        )
        assert created["status"] in ("created", "connecting"), created
        _assert_untouched(created, bob)
        assert created["total_input_tokens"] == created["total_output_tokens"] == 0
        again = await _json(await client.get(f"{API}/sessions/{created['id']}", headers=bob.headers), 200)
        assert again["status"] != "completed"
        _assert_untouched(again, bob)
        assert (await client.delete(f"{API}/sessions/{created['id']}", headers=bob.headers)).status_code == 204

    async def test_api_key_belongs_to_its_creator(self, client: httpx.AsyncClient, world: World) -> None:
        r = await client.post(f"{API}/auth/api-keys", json=_poisoned({"name": "b"}, world), headers=world.bob.headers)
        key = (await _json(r))["key"]
        me = await _json(await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {key}"}), 200)
        assert me["id"] == world.bob.id and me["role"] == "user"

    async def test_template_sharing_cannot_change_the_owner(self, client: httpx.AsyncClient, world: World) -> None:
        t = await _json(await client.post(f"{API}/session-templates", json={"name": "s"}, headers=world.bob.headers))
        r = await client.patch(
            f"{API}/session-templates/{t['id']}/sharing",
            json=_poisoned({"is_public": True}, world),
            headers=world.bob.headers,
        )
        _assert_untouched(await _json(r, 200), world.bob)

    async def test_a_user_cannot_publish_globally(self, client: httpx.AsyncClient, world: World) -> None:
        for path, body in (("/webhooks", _HOOK_BODY), ("/mcp-servers", {**_MCP_BODY, "name": "glob"})):
            r = await client.post(API + path, json={**body, "is_global": True}, headers=world.bob.headers)
            assert_error_shape(r, 403)

    async def test_nothing_of_bobs_budget_or_role_changed(self, client: httpx.AsyncClient, world: World) -> None:
        r = await client.get(f"{API}/admin/users/{world.bob.id}", headers=world.admin.headers)
        bob = await _json(r, 200)
        assert bob["role"] == "user" and bob["is_admin"] is False
        assert bob["monthly_budget_usd"] is None
        budget = await _json(
            await client.get(f"{API}/monitoring/costs/budget/{world.bob.id}", headers=world.bob.headers), 200
        )
        assert budget["current_month_cost_usd"] == 0
