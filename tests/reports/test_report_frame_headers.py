"""An HTML report is served with a policy that lets it render in the console's sandboxed frame and run nothing."""

from __future__ import annotations

import httpx

from agent_api import security_headers
from tests.conftest import UserAccount, Users
from tests.reports.conftest import Factory, History, ReportsApi

REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


def directives(policy: str) -> dict[str, str]:
    parts = (p.strip() for p in policy.split(";"))
    return {p.split(" ", 1)[0]: (p.split(" ", 1)[1] if " " in p else "") for p in parts if p}


class TestReportFrameHeaders:
    async def test_html_is_sandboxed_without_script_and_not_sniffed(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        await factory.turn(sid, History(answer="<script>alert(1)</script>"))
        rid = (await reports.create(sid))["id"]
        r = await reports.download(rid, "html")
        assert r.status_code == 200, r.text
        assert r.headers["content-security-policy"] == REPORT_CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        policy = directives(r.headers["content-security-policy"])
        assert policy["sandbox"] == "", "a bare sandbox: no allow-scripts, no allow-same-origin"
        assert "script-src" not in policy and policy["default-src"] == "'none'"
        assert policy["frame-ancestors"] == "'self'"

    async def test_the_default_format_gets_it_too(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        rid = (await reports.create(await factory.session(owner)))["id"]
        r = await client.get(f"/api/v1/reports/{rid}/download", headers=owner.headers)
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == REPORT_CSP

    async def test_the_view_route_shows_it_in_place_with_the_same_policy(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount, users: Users
    ) -> None:
        rid = (await reports.create(await factory.session(owner)))["id"]
        r = await client.get(f"/api/v1/reports/{rid}/view", headers=owner.headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == REPORT_CSP
        assert "content-disposition" not in r.headers
        stranger = await users.create()
        assert (await client.get(f"/api/v1/reports/{rid}/view", headers=stranger.headers)).status_code == 404
        assert (await client.get(f"/api/v1/reports/{rid}/view")).status_code == 401
        ticket = await client.post(
            "/api/v1/auth/download-ticket", json={"path": f"/api/v1/reports/{rid}/view"}, headers=owner.headers
        )
        assert ticket.status_code == 201, ticket.text
        assert (await client.get(ticket.json()["url"])).status_code == 200

    async def test_json_is_not_framed_but_not_sniffed_either(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        rid = (await reports.create(await factory.session(owner)))["id"]
        r = await reports.download(rid, "json")
        assert r.status_code == 200
        assert "content-security-policy" not in r.headers
        assert r.headers["x-content-type-options"] == "nosniff"


class TestConsolePolicy:
    def test_the_console_policy_is_strict(self) -> None:
        policy = directives(security_headers.CONSOLE_CSP)
        assert policy == {
            "default-src": "'self'",
            "script-src": "'self'",
            "style-src": "'self'",
            "img-src": "'self' data:",
            "connect-src": "'self'",
            "frame-src": "'self'",
            "object-src": "'none'",
            "base-uri": "'none'",
            "form-action": "'self'",
            "frame-ancestors": "'none'",
        }
        assert "unsafe" not in security_headers.CONSOLE_CSP
        assert security_headers.console_headers()["Content-Security-Policy"] == security_headers.CONSOLE_CSP


class TestAttachmentNames:
    def test_plain_names_stay_plain(self) -> None:
        assert security_headers.attachment("report.pdf") == 'attachment; filename="report.pdf"'

    def test_quotes_controls_and_non_ascii_never_reach_the_quoted_name(self) -> None:
        value = security_headers.attachment('a"b\\c\r\nd\u00e9.txt')
        assert value == ("attachment; filename=\"a_b_c__d_.txt\"; filename*=UTF-8''a%22b%5Cc%0D%0Ad%C3%A9.txt")
        assert "\r" not in value and "\n" not in value
        assert security_headers.attachment("") == 'attachment; filename="download"'
