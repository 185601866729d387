"""Webhooks: registration, SSRF refusals, signed at-least-once delivery with retries, disabling, ownership.

Deliveries go over real HTTP to a receiver on loopback (allowlisted); the retry schedule is driven by moving the
application's clock, never by waiting it out.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from agent_api.app import create_app
from agent_api.client import AgentApiClient, ApiError, verify_webhook
from agent_api.models.base import utcnow
from agent_api.webhook_outbox import from_session_event
from agent_api.webhooks.delivery import RETRY_DELAYS_S
from tests.conftest import UserAccount, Users, app_state, assert_error_shape, make_settings, wait_until
from tests.webhooks.receiver import Receiver

API = "/api/v1/webhooks"


@pytest.fixture(scope="module")
async def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        database_url,
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_timeout_s=0.5,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


class Clock:
    """The application's clock, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@pytest.fixture
def clock(app: object) -> Iterator[Clock]:
    state = app_state(app)
    original, state.clock = state.clock, Clock()
    try:
        yield state.clock  # type: ignore[misc]
    finally:
        state.clock = original


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def alice(users: Users) -> UserAccount:
    return await users.create()


async def create_hook(client: httpx.AsyncClient, user: UserAccount, url: str, **body: Any) -> dict[str, Any]:
    body.setdefault("events", ["turn.completed"])
    r = await client.post(API, json={"url": url, **body}, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def deliveries(client: httpx.AsyncClient, user: UserAccount, hook_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"{API}/{hook_id}/deliveries", headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def delivery_after(
    client: httpx.AsyncClient, user: UserAccount, hook_id: str, delivery_id: str, attempts: int
) -> dict[str, Any]:
    """The delivery once its attempt number `attempts` is recorded."""

    async def check() -> dict[str, Any] | None:
        for d in await deliveries(client, user, hook_id):
            if d["id"] == delivery_id and d["attempts"] >= attempts:
                return d
        return None

    return await wait_until(check, timeout=20)


def move_to(app: object, clock: Clock, due: str) -> None:
    """Move the clock just past `due` and let the delivery loop look."""
    clock.offset += datetime.fromisoformat(due) - clock() + timedelta(seconds=1)
    app_state(app).dispatcher.wake_deliveries()


def verify(secret: str, message: Any) -> dict[str, Any]:
    return Verifier(secret).verify(message.body, message.headers)  # type: ignore[no-any-return]


class TestRegistration:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.get(API), 401)
        assert_error_shape(
            await client.post(API, json={"url": "https://example.com", "events": ["turn.completed"]}), 401
        )

    async def test_create_shows_the_secret_once(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        hook = await create_hook(client, alice, "http://127.0.0.1:9/hook", events=["turn.completed", "turn.failed"])
        assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
        assert hook["is_active"] is True and hook["disabled_reason"] is None
        assert hook["events"] == ["turn.completed", "turn.failed"]
        read = (await client.get(f"{API}/{hook['id']}", headers=alice.headers)).json()
        assert "secret" not in read and read["url"] == "http://127.0.0.1:9/hook"
        listed = (await client.get(API, headers=alice.headers)).json()
        assert [h["id"] for h in listed["items"]] == [hook["id"]] and listed["total"] == 1
        assert all("secret" not in h for h in listed["items"])

    async def test_update_and_delete(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        hook = await create_hook(client, alice, "http://127.0.0.1:9/hook")
        r = await client.patch(
            f"{API}/{hook['id']}",
            json={"events": ["budget.warning", "budget.warning"], "description": "money"},
            headers=alice.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["budget.warning"] and r.json()["description"] == "money"
        assert (await client.delete(f"{API}/{hook['id']}", headers=alice.headers)).status_code == 204
        assert_error_shape(await client.get(f"{API}/{hook['id']}", headers=alice.headers), 404, "webhook_not_found")

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "http://127.0.0.1:9/", "events": []},
            {"url": "http://127.0.0.1:9/", "events": ["turn.exploded"]},
            {"url": "http://127.0.0.1:9/"},
            {"events": ["turn.completed"]},
            {"url": "http://127.0.0.1:9/" + "a" * 3000, "events": ["turn.completed"]},
        ],
    )
    async def test_bad_bodies_are_422_and_create_nothing(
        self, client: httpx.AsyncClient, alice: UserAccount, body: dict[str, Any]
    ) -> None:
        assert_error_shape(await client.post(API, json=body, headers=alice.headers), 422)
        assert (await client.get(API, headers=alice.headers)).json()["total"] == 0

    @pytest.mark.parametrize("url", ["http://127.0.0.1:9/a\x01b", "http://127.0.0.1:9/a b", "http://127.0.0.1:9/\x7f"])
    async def test_control_characters_are_refused(
        self, client: httpx.AsyncClient, alice: UserAccount, url: str
    ) -> None:
        r = await client.post(API, json={"url": url, "events": ["turn.completed"]}, headers=alice.headers)
        assert_error_shape(r, 422)
        assert (await client.get(API, headers=alice.headers)).json()["total"] == 0

    async def test_only_admins_add_global_webhooks(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        r = await client.post(
            API,
            json={"url": "http://127.0.0.1:9/", "events": ["turn.completed"], "is_global": True},
            headers=alice.headers,
        )
        assert_error_shape(r, 403, "admin_required")
        assert (await client.get(API, headers=alice.headers)).json()["total"] == 0

    def test_every_route_is_in_the_openapi_document(self, app: object) -> None:
        spec = app.openapi()  # type: ignore[attr-defined]
        routes = {
            (API, "post"): "WebhookCreated",
            (API, "get"): "Page_WebhookRead_",
            (f"{API}/{{webhook_id}}", "get"): "WebhookRead",
            (f"{API}/{{webhook_id}}", "patch"): "WebhookRead",
            (f"{API}/{{webhook_id}}/rotate-secret", "post"): "SecretRotated",
            (f"{API}/{{webhook_id}}/test", "post"): "TestDelivery",
            (f"{API}/{{webhook_id}}/deliveries", "get"): "Page_DeliveryRead_",
        }
        for (path, method), schema in routes.items():
            responses = spec["paths"][path][method]["responses"]
            ok = next(v for k, v in responses.items() if k.startswith("2"))
            assert ok["content"]["application/json"]["schema"]["$ref"].endswith(f"/{schema}"), (path, method)
            assert spec["paths"][path][method]["description"]
        assert "204" in spec["paths"][f"{API}/{{webhook_id}}"]["delete"]["responses"]
        assert set(spec["components"]["schemas"]["WebhookCreate"]["properties"]) >= {"url", "events", "description"}


class TestSsrf:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.2:{port}/",  # loopback, not the allowlisted host
            "http://localhost:{port}/",
            "http://2130706433:{port}/",  # 127.0.0.1 as one decimal number
            "http://0x7f.1:{port}/",
            "http://[::1]:{port}/",
            "http://[::ffff:127.0.0.1]:{port}/",
            "http://10.0.0.1:{port}/",
            "http://192.168.1.1:{port}/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/",
            "ftp://127.0.0.1:{port}/",
            "http://user:pw@127.0.0.1:{port}/",
        ],
    )
    async def test_internal_targets_are_refused_and_never_connected(
        self, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver, url: str
    ) -> None:
        r = await client.post(
            API, json={"url": url.format(port=receiver.port), "events": ["turn.completed"]}, headers=alice.headers
        )
        assert_error_shape(r, 422, "url_not_allowed")
        assert (await client.get(API, headers=alice.headers)).json()["total"] == 0
        assert receiver.connections == 0

    async def test_a_redirect_to_loopback_is_not_followed(
        self, app: object, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver
    ) -> None:
        inner = await Receiver(host="127.0.0.2").start()
        try:
            receiver.script = [("redirect", inner.url)]
            hook = await create_hook(client, alice, receiver.url)
            test = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()
            d = await delivery_after(client, alice, hook["id"], test["delivery_id"], 1)
            assert d["last_status_code"] == 302 and "redirect" in d["last_error"]
            assert d["status"] == "pending" and d["next_attempt_at"] is not None
            assert len(receiver.received) == 1 and inner.connections == 0
        finally:
            await inner.stop()

    async def test_the_target_is_checked_again_at_delivery(
        self, app: object, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver
    ) -> None:
        settings = app_state(app).settings
        hook = await create_hook(client, alice, receiver.url)
        settings.webhook_allowed_hosts = []
        try:
            test = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()
            d = await delivery_after(client, alice, hook["id"], test["delivery_id"], 1)
        finally:
            settings.webhook_allowed_hosts = ["127.0.0.1"]
        assert d["last_status_code"] is None and "target refused" in d["last_error"] and "loopback" in d["last_error"]
        assert receiver.connections == 0


class TestDelivery:
    async def test_a_test_event_arrives_signed(
        self, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver
    ) -> None:
        hook = await create_hook(client, alice, receiver.url)
        r = await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)
        assert r.status_code == 202, r.text
        d = await delivery_after(client, alice, hook["id"], r.json()["delivery_id"], 1)
        assert d["status"] == "succeeded" and d["last_status_code"] == 200 and d["delivered_at"]
        [message] = receiver.received
        payload = verify(hook["secret"], message)
        assert payload["type"] == "webhook.test" and payload["data"]["webhook_id"] == hook["id"]
        assert message.headers["webhook-id"] == r.json()["event_id"] == d["event_id"]
        with pytest.raises(WebhookVerificationError):
            Verifier("whsec_" + "A" * 43 + "=").verify(message.body, message.headers)

    async def test_failures_are_retried_on_schedule_with_the_same_id(
        self, app: object, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver, clock: Clock
    ) -> None:
        receiver.script = [500, 500, 200]
        hook = await create_hook(client, alice, receiver.url)
        delivery_id = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()["delivery_id"]
        for attempt in (1, 2):
            d = await delivery_after(client, alice, hook["id"], delivery_id, attempt)
            assert d["status"] == "pending" and d["last_status_code"] == 500 and d["last_error"] == "HTTP 500"
            wait_s = (datetime.fromisoformat(d["next_attempt_at"]) - clock()).total_seconds()
            expected = RETRY_DELAYS_S[attempt - 1]
            assert expected * 0.85 <= wait_s <= expected * 1.1, (attempt, wait_s)
            move_to(app, clock, d["next_attempt_at"])
        d = await delivery_after(client, alice, hook["id"], delivery_id, 3)
        assert d["status"] == "succeeded" and d["attempts"] == 3 and d["last_error"] is None
        assert len(receiver.received) == 3
        assert len({m.headers["webhook-id"] for m in receiver.received}) == 1
        for message in receiver.received:
            verify(hook["secret"], message)  # each attempt signed when sent

    async def test_an_endpoint_that_never_answers_is_disabled_after_a_day(
        self, app: object, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver, clock: Clock
    ) -> None:
        receiver.script = ["hang"] * 20
        hook = await create_hook(client, alice, receiver.url)
        delivery_id = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()["delivery_id"]
        start = clock()
        attempts = 0
        while True:
            attempts += 1
            d = await delivery_after(client, alice, hook["id"], delivery_id, attempts)
            assert "no response" in d["last_error"]
            if d["status"] != "pending":
                break
            assert attempts < 12
            move_to(app, clock, d["next_attempt_at"])
        read = (await client.get(f"{API}/{hook['id']}", headers=alice.headers)).json()
        assert d["status"] == "failed" and read["is_active"] is False
        assert "failed for" in read["disabled_reason"] and "no response" in read["disabled_reason"]
        assert clock() - start >= timedelta(days=1)
        assert len(receiver.received) == attempts
        assert_error_shape(
            await client.post(f"{API}/{hook['id']}/test", headers=alice.headers), 409, "webhook_inactive"
        )
        # Re-enabled by its owner, it is delivered to again.
        r = await client.patch(f"{API}/{hook['id']}", json={"is_active": True}, headers=alice.headers)
        assert r.json()["is_active"] is True and r.json()["disabled_reason"] is None
        receiver.script = []
        delivery_id = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()["delivery_id"]
        assert (await delivery_after(client, alice, hook["id"], delivery_id, 1))["status"] == "succeeded"

    async def test_one_test_at_a_time(self, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver) -> None:
        receiver.script = ["hang"]
        hook = await create_hook(client, alice, receiver.url)
        first = await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)
        assert first.status_code == 202
        again = await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)
        assert_error_shape(again, 409, "webhook_test_pending")
        assert len(await deliveries(client, alice, hook["id"])) == 1

    async def test_after_a_rotation_both_secrets_sign_for_a_day(
        self, client: httpx.AsyncClient, alice: UserAccount, receiver: Receiver
    ) -> None:
        hook = await create_hook(client, alice, receiver.url)
        r = await client.post(f"{API}/{hook['id']}/rotate-secret", headers=alice.headers)
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != hook["secret"] and rotated["secret"].startswith("whsec_")
        expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert timedelta(hours=23) < expires - utcnow() <= timedelta(hours=24)
        delivery_id = (await client.post(f"{API}/{hook['id']}/test", headers=alice.headers)).json()["delivery_id"]
        await delivery_after(client, alice, hook["id"], delivery_id, 1)
        [message] = receiver.received
        assert len(message.headers["webhook-signature"].split(" ")) == 2
        verify(rotated["secret"], message)
        verify(hook["secret"], message)


class TestOwnership:
    async def test_another_users_webhook_is_404_everywhere(
        self, client: httpx.AsyncClient, alice: UserAccount, users: Users
    ) -> None:
        bob = await users.create()
        hook = await create_hook(client, alice, "http://127.0.0.1:9/hook")
        base = f"{API}/{hook['id']}"
        for method, path in [
            ("GET", base),
            ("PATCH", base),
            ("DELETE", base),
            ("POST", f"{base}/rotate-secret"),
            ("POST", f"{base}/test"),
            ("GET", f"{base}/deliveries"),
        ]:
            r = await client.request(method, path, json={} if method == "PATCH" else None, headers=bob.headers)
            assert_error_shape(r, 404, "webhook_not_found")
        assert (await client.get(API, headers=bob.headers)).json()["total"] == 0
        assert (await client.get(base, headers=alice.headers)).status_code == 200
        assert_error_shape(await client.get(f"{API}/{uuid.uuid4()}", headers=alice.headers), 404)

    async def test_users_hear_only_their_own_sessions_and_global_hooks_hear_all(
        self, client: httpx.AsyncClient, alice: UserAccount, users: Users, receiver: Receiver
    ) -> None:
        bob, admin = await users.create(), await users.create(admin=True)
        bob_receiver, global_receiver = await Receiver().start(), await Receiver().start()
        try:
            events = ["session.status_changed"]
            await create_hook(client, alice, receiver.url, events=events)
            await create_hook(client, bob, bob_receiver.url, events=events)
            await create_hook(client, admin, global_receiver.url, events=events, is_global=True)
            r = await client.post("/api/v1/sessions", json={}, headers=alice.headers)
            session_id = r.json()["id"]
            r = await client.post(f"/api/v1/sessions/{session_id}/pause", headers=alice.headers)
            assert r.status_code == 200, r.text

            async def paused_heard(r: Receiver) -> bool:
                return any(m.payload["data"].get("status") == "paused" for m in r.received)

            await wait_until(lambda: paused_heard(receiver), timeout=20)
            await wait_until(lambda: paused_heard(global_receiver), timeout=20)
            heard = [m.payload for m in receiver.received]
            assert all(p["type"] == "session.status_changed" for p in heard)
            assert all(p["data"]["session_id"] == session_id for p in heard)
            assert heard[-1]["data"]["path"] == f"/api/v1/sessions/{session_id}"
            # Bob's own session events reach his receiver; Alice's never do.
            r = await client.post("/api/v1/sessions", json={}, headers=bob.headers)
            bob_session = r.json()["id"]
            await client.post(f"/api/v1/sessions/{bob_session}/pause", headers=bob.headers)
            await wait_until(lambda: paused_heard(bob_receiver), timeout=20)
            assert {m.payload["data"]["session_id"] for m in bob_receiver.received} == {bob_session}
        finally:
            await bob_receiver.stop()
            await global_receiver.stop()


async def _status_reached(client: httpx.AsyncClient, user: UserAccount, session_id: str, *statuses: str) -> bool:
    r = await client.get(f"/api/v1/sessions/{session_id}", headers=user.headers)
    return r.json()["status"] in statuses


class TestAfterTheOwnerChanges:
    async def test_a_demoted_admins_global_webhook_hears_nobody(
        self, client: httpx.AsyncClient, alice: UserAccount, users: Users
    ) -> None:
        admin, other_admin = await users.create(admin=True), await users.create(admin=True)
        global_receiver = await Receiver().start()
        try:
            await create_hook(client, admin, global_receiver.url, events=["session.status_changed"], is_global=True)
            r = await client.patch(
                f"/api/v1/admin/users/{admin.id}", json={"is_admin": False}, headers=other_admin.headers
            )
            assert r.status_code == 200, r.text
            # Alice's own hook hears her session; the former admin's global one does not.
            mine = await Receiver().start()
            try:
                await create_hook(client, alice, mine.url, events=["session.status_changed"])
                session_id = (await client.post("/api/v1/sessions", json={}, headers=alice.headers)).json()["id"]
                await client.post(f"/api/v1/sessions/{session_id}/pause", headers=alice.headers)

                async def heard() -> bool:
                    return any(m.payload["data"].get("status") == "paused" for m in mine.received)

                await wait_until(heard, timeout=20)
            finally:
                await mine.stop()
            assert global_receiver.received == []
        finally:
            await global_receiver.stop()


class TestThinPayloads:
    def test_a_permission_request_carries_a_preview_not_the_input(self) -> None:
        data = {
            "request_id": "r",
            "tool": "MultiEdit",
            "input": {"file_path": "a.py", "edits": [{"old": "x" * 10_000}] * 50, "content": "y" * 5_000},
        }
        kind, payload = from_session_event(uuid.uuid4(), "permission_request", data)  # type: ignore[misc]
        assert kind == "permission.requested"
        summary = payload["input_summary"]
        assert summary["file_path"] == "a.py" and summary["edits"] == "[list of 50]"
        assert len(summary["content"]) <= 201
        assert len(str(payload)) < 1_000


class TestClient:
    async def test_the_python_client_manages_webhooks_and_verifies_deliveries(
        self, app: object, alice: UserAccount, receiver: Receiver
    ) -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with AgentApiClient("http://testserver", token=alice.access_token, transport=transport) as api:
            hook = await api.create_webhook(receiver.url, ["turn.completed"], description="ci")
            assert (await api.get_webhook(hook["id"]))["description"] == "ci"
            assert (await api.list_webhooks())["total"] == 1
            updated = await api.update_webhook(hook["id"], events=["turn.failed"])
            assert updated["events"] == ["turn.failed"]
            sent = await api.test_webhook(hook["id"])

            async def delivered() -> dict[str, Any] | None:
                page = await api.webhook_deliveries(hook["id"])
                return next((d for d in page["items"] if d["status"] == "succeeded"), None)

            assert (await wait_until(delivered, timeout=20))["id"] == sent["delivery_id"]
            [message] = receiver.received
            assert verify_webhook(message.body, message.headers, hook["secret"])["type"] == "webhook.test"
            with pytest.raises(WebhookVerificationError):
                verify_webhook(message.body.replace(b"test", b"tost"), message.headers, hook["secret"])
            rotated = await api.rotate_webhook_secret(hook["id"])
            assert rotated["secret"] != hook["secret"]
            await api.delete_webhook(hook["id"])
            with pytest.raises(ApiError) as info:
                await api.get_webhook(hook["id"])
            assert info.value.status == 404 and info.value.code == "webhook_not_found"
