"""The console's shell: served at `/` under its policy, sign-in, a failed sign-in, sign-out, and paths it must not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.console.conftest import ConsoleServer, sign_in


class TestServing:
    def test_the_page_and_its_modules_carry_a_strict_policy(self, console: ConsoleServer) -> None:
        for path in ("/", "/console/js/main.js", "/console/css/base.css"):
            r = httpx.get(console.url + path)
            assert r.status_code == 200, path
            policy = r.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
            assert r.headers["x-content-type-options"] == "nosniff"
        assert httpx.get(console.url + "/console/js/main.js").headers["content-type"].startswith("text/javascript")

    def test_api_docs_and_metrics_are_not_shadowed(self, console: ConsoleServer) -> None:
        r = httpx.get(console.url + "/api/v1/no-such-thing")
        assert r.status_code == 404 and r.json()["error"]["code"]
        assert httpx.get(console.url + "/docs").status_code == 200
        assert httpx.get(console.url + "/metrics").status_code == 200
        spec = httpx.get(console.url + "/openapi.json").json()
        assert all(not p.startswith("/console") and p != "/" for p in spec["paths"])

    def test_no_file_outside_the_console_folder(self, console: ConsoleServer) -> None:
        for path in (
            "/console/../router.py",
            "/console/%2e%2e/router.py",
            "/console/js/../../__init__.py",
            "/console/nope.js",
        ):
            r = httpx.get(console.url + path)
            assert r.status_code == 404, path


class TestSignIn:
    def test_sign_in_and_out(self, page: Any, console: ConsoleServer, screenshots: Path) -> None:
        user = console.new_user()
        sign_in(page, console, user)
        expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
        expect(page.locator(".who")).to_have_text(user.username)
        page.screenshot(path=str(screenshots / "sessions-empty.png"))
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    def test_a_wrong_password_says_so_without_naming_the_user(self, page: Any, console: ConsoleServer) -> None:
        user = console.new_user()
        page.goto(console.url + "/")
        for name in (user.username, "nobody-" + user.username):
            page.get_by_label("Username or email").fill(name)
            page.get_by_label("Password").fill("wrong password!")
            page.get_by_role("button", name="Sign in").click()
            alert = page.get_by_role("alert")
            expect(alert).to_be_visible()
            text = alert.inner_text()
            assert "password" in text.lower() and name not in text
