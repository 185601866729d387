"""Download tickets: issued for one download URL, stored hashed, good once for 60 seconds, for that user and that URL
only, and accepted by the three download routes alone."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from agent_api.auth import tickets
from agent_api.models import DownloadTicket, User
from agent_api.models.base import utcnow
from agent_api.sessions import service as sessions_service
from agent_api.sessions.schemas import SessionCreate
from tests.conftest import UserAccount, Users, app_state, assert_error_shape, tar_members

TICKETS = "/api/v1/auth/download-ticket"
SESSIONS = "/api/v1/sessions"


async def new_session(app: object, owner: UserAccount, files: dict[str, bytes] | None = None) -> str:
    """A session made through the sessions service (no agent process starts), with files in its working directory."""
    state = app_state(app)
    async with state.db.transaction() as db:
        user = await db.get(User, uuid.UUID(owner.id))
        created = await sessions_service.create_session(db, state, user, SessionCreate(name="tickets"))
    root: Path = sessions_service.workdir_of(state, created.session.id)
    for name, data in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(created.session.id)


async def new_report(client: httpx.AsyncClient, app: object, owner: UserAccount) -> str:
    session_id = await new_session(app, owner)
    r = await client.post(f"{SESSIONS}/{session_id}/report", headers=owner.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def issue(client: httpx.AsyncClient, user: UserAccount, path: str) -> dict[str, Any]:
    r = await client.post(TICKETS, json={"path": path}, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def ticket_rows(app: object, user: UserAccount) -> list[DownloadTicket]:
    async with app_state(app).db.transaction(readonly=True) as db:
        stmt = select(DownloadTicket).where(DownloadTicket.user_id == uuid.UUID(user.id))
        return list((await db.scalars(stmt)).all())


async def expire(app: object, ticket: str) -> None:
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    async with app_state(app).db.transaction() as db:
        await db.execute(
            update(DownloadTicket)
            .where(DownloadTicket.ticket_hash == digest)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


@pytest.fixture
async def session_id(app: object, owner: UserAccount) -> str:
    return await new_session(app, owner, {"a.txt": b"alpha", "dir/b.txt": b"beta", "blob.bin": b"\x00\x01"})


class TestIssue:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient, session_id: str) -> None:
        path = f"{SESSIONS}/{session_id}/workdir/download"
        assert_error_shape(await client.post(TICKETS, json={"path": path}), 401)

    async def test_answers_ticket_expiry_and_url(
        self, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        before = utcnow()
        path = f"{SESSIONS}/{session_id}/workdir/download"
        body = await issue(client, owner, path)
        assert set(body) == {"ticket", "expires_at", "expires_in", "url"}
        assert body["expires_in"] == 60
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert timedelta(seconds=59) <= expires_at - before <= timedelta(seconds=61)
        assert body["url"] == f"{path}?ticket={body['ticket']}"
        with_query = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        assert with_query["url"] == f"{SESSIONS}/{session_id}/files/content?path=a.txt&ticket={with_query['ticket']}"
        assert with_query["ticket"] != body["ticket"]

    async def test_only_the_hash_is_stored(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        [row] = [t for t in await ticket_rows(app, owner) if t.used_at is None]
        assert row.ticket_hash == hashlib.sha256(body["ticket"].encode()).hexdigest()
        assert body["ticket"] not in (row.ticket_hash, row.target)
        assert row.target == f"{SESSIONS}/{session_id}/files/content?path=a.txt"

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/auth/me",
            "/api/v1/sessions/{sid}",
            "/api/v1/sessions/{sid}/files",
            "/api/v1/sessions/{sid}/messages",
            "/api/v1/sessions/not-a-uuid/workdir/download",
            "/api/v1/sessions/{sid}/workdir/download/",
            "/api/v1/sessions/{sid}/workdir/download/../../../auth/me",
            "/api/v1/sessions/{sid}/workdir/download#frag",
            "/api/v1/sessions/{sid}/workdir/download?ticket=x",
            "api/v1/sessions/{sid}/workdir/download",
            "https://evil.example/api/v1/sessions/{sid}/workdir/download",
            "//evil.example/api/v1/sessions/{sid}/workdir/download",
            "/api/v1/reports/{sid}/download/extra",
            "/api/v2/reports/{sid}/download",
        ],
    )
    async def test_anything_but_a_download_route_is_422_and_stores_nothing(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str, path: str
    ) -> None:
        before = len(await ticket_rows(app, owner))
        r = await client.post(TICKETS, json={"path": path.format(sid=session_id)}, headers=owner.headers)
        assert_error_shape(r, 422, "not_a_download_route")
        assert len(await ticket_rows(app, owner)) == before

    @pytest.mark.parametrize("body", [{}, {"path": ""}, {"path": 5}, {"path": "/" + "a" * 9000}, []])
    async def test_a_bad_body_is_422(self, client: httpx.AsyncClient, owner: UserAccount, body: object) -> None:
        assert_error_shape(await client.post(TICKETS, json=body, headers=owner.headers), 422, "validation_error")

    async def test_expired_tickets_are_cleared_when_the_next_is_issued(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        path = f"{SESSIONS}/{session_id}/workdir/download"
        old = await issue(client, owner, path)
        await expire(app, old["ticket"])
        await issue(client, owner, path)
        digests = {t.ticket_hash for t in await ticket_rows(app, owner)}
        assert hashlib.sha256(old["ticket"].encode()).hexdigest() not in digests
        assert len(digests) == 1


class TestRedeem:
    async def test_the_workdir_download_takes_a_ticket_instead_of_the_token(
        self, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/workdir/download")
        r = await client.get(body["url"])  # no Authorization header
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/gzip"
        assert tar_members(r.content)["a.txt"] == b"alpha"

    async def test_file_content_takes_a_ticket(
        self, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=blob.bin")
        r = await client.get(body["url"])
        assert r.status_code == 200, r.text
        assert r.content == b"\x00\x01"
        assert r.headers["content-disposition"] == 'attachment; filename="blob.bin"'

    async def test_a_report_download_takes_a_ticket_for_its_format_only(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        report_id = await new_report(client, app, owner)
        body = await issue(client, owner, f"/api/v1/reports/{report_id}/download?format=json")
        html_url = body["url"].replace("format=json", "format=html")
        assert_error_shape(await client.get(html_url), 401, "invalid_ticket")
        assert_error_shape(await client.get(f"/api/v1/reports/{report_id}/download?ticket={body['ticket']}"), 401)
        r = await client.get(body["url"])
        assert r.status_code == 200, r.text
        assert r.json()["report_id"] == report_id

    async def test_a_ticket_works_once(self, client: httpx.AsyncClient, owner: UserAccount, session_id: str) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        assert (await client.get(body["url"])).content == b"alpha"
        assert_error_shape(await client.get(body["url"]), 401, "invalid_ticket")

    async def test_an_expired_ticket_is_401(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        await expire(app, body["ticket"])
        assert_error_shape(await client.get(body["url"]), 401, "invalid_ticket")

    async def test_an_unknown_or_empty_ticket_is_401(self, client: httpx.AsyncClient, session_id: str) -> None:
        for ticket in ("dlt_" + "x" * 43, "", "wst_not-a-download-ticket"):
            r = await client.get(f"{SESSIONS}/{session_id}/workdir/download", params={"ticket": ticket})
            assert_error_shape(r, 401, "invalid_ticket")

    async def test_a_ticket_opens_only_its_own_url(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        other_session = await new_session(app, owner, {"a.txt": b"other"})
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        t = body["ticket"]
        elsewhere = [
            f"{SESSIONS}/{session_id}/files/content?path=dir/b.txt&ticket={t}",  # another file
            f"{SESSIONS}/{session_id}/files/content?ticket={t}",  # no path
            f"{SESSIONS}/{session_id}/files/content?path=a.txt&path=dir/b.txt&ticket={t}",
            f"{SESSIONS}/{other_session}/files/content?path=a.txt&ticket={t}",  # another session
            f"{SESSIONS}/{session_id}/workdir/download?path=a.txt&ticket={t}",  # another route
        ]
        for url in elsewhere:
            assert_error_shape(await client.get(url), 401, "invalid_ticket")
        # Refused elsewhere, it was not spent: it still opens its own URL, once.
        assert (await client.get(body["url"])).content == b"alpha"

    async def test_the_query_is_compared_decoded_and_in_any_order(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount
    ) -> None:
        sid = await new_session(app, owner, {"dir/my file.txt": b"spaced"})
        body = await issue(client, owner, f"{SESSIONS}/{sid}/files/content?path=dir%2Fmy%20file.txt")
        r = await client.get(f"{SESSIONS}/{sid}/files/content?ticket={body['ticket']}&path=dir/my+file.txt")
        assert r.status_code == 200, r.text
        assert r.content == b"spaced"

    async def test_another_users_resource_is_404_with_a_ticket_too(
        self, client: httpx.AsyncClient, users: Users, owner: UserAccount, session_id: str
    ) -> None:
        intruder = await users.create()
        body = await issue(client, intruder, f"{SESSIONS}/{session_id}/workdir/download")
        assert_error_shape(await client.get(body["url"]), 404, "session_not_found")
        listing = f"{SESSIONS}/{session_id}/files/content?path=a.txt"
        body = await issue(client, intruder, listing)
        assert_error_shape(await client.get(body["url"]), 404, "session_not_found")

    async def test_a_disabled_users_ticket_is_401(
        self, app: object, client: httpx.AsyncClient, users: Users, session_id: str
    ) -> None:
        user = await users.create()
        sid = await new_session(app, user, {"a.txt": b"mine"})
        body = await issue(client, user, f"{SESSIONS}/{sid}/files/content?path=a.txt")
        async with app_state(app).db.transaction() as db:
            await db.execute(update(User).where(User.id == uuid.UUID(user.id)).values(is_active=False))
        assert_error_shape(await client.get(body["url"]), 401, "invalid_ticket")

    async def test_other_routes_ignore_tickets(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/workdir/download")
        for url in (f"{SESSIONS}/{session_id}", f"{SESSIONS}/{session_id}/files", "/api/v1/auth/me"):
            r = await client.get(url, params={"ticket": body["ticket"]})
            assert_error_shape(r, 401, "unauthorized")
        # Still unspent.
        assert (await client.get(body["url"])).status_code == 200

    async def test_the_bearer_token_still_works_on_download_routes(
        self, app: object, client: httpx.AsyncClient, owner: UserAccount, session_id: str
    ) -> None:
        report_id = await new_report(client, app, owner)
        for url in (
            f"{SESSIONS}/{session_id}/workdir/download",
            f"{SESSIONS}/{session_id}/files/content?path=a.txt",
            f"/api/v1/reports/{report_id}/download?format=json",
        ):
            assert (await client.get(url, headers=owner.headers)).status_code == 200, url

    async def test_the_ticket_never_reaches_the_access_log(
        self, client: httpx.AsyncClient, owner: UserAccount, session_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        body = await issue(client, owner, f"{SESSIONS}/{session_id}/files/content?path=a.txt")
        with caplog.at_level(logging.INFO, logger="agent_api.access"):
            assert (await client.get(body["url"])).status_code == 200
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "agent_api.access"]
        assert any("/files/content" in line for line in lines)
        assert all(body["ticket"] not in line for line in lines)


class TestCanonicalTarget:
    def test_the_ticket_is_dropped_and_the_rest_sorted(self) -> None:
        target = tickets.canonical_target("/p", [("z", "1"), ("ticket", "t"), ("a", "b c"), ("a", "a")])
        assert target == "/p?a=a&a=b+c&z=1"
        assert parse_qsl(urlsplit(target).query) == [("a", "a"), ("a", "b c"), ("z", "1")]
        assert tickets.canonical_target("/p", []) == "/p"
        assert tickets.canonical_target("/p", [("ticket", "t")]) == "/p"
