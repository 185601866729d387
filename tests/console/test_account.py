"""The account screens in the browser: admin (users, the 403 others see), API keys, webhooks and costs."""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Account, ConsoleServer, login, sign_in

DOCS = Path(__file__).resolve().parents[2] / "docs"
# A public address (no DNS needed, so the API's SSRF guard accepts it); whatever answers there, the delivery is logged.


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def shoot(page: Any, screenshots: Path, name: str) -> None:
    """The page at 1280 px and at 390 px (a phone), whole; the viewport is left at 1280 px."""
    page.evaluate("window.scrollTo(0, 0)")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=str(screenshots / f"{name}-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshots / f"{name}-390.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def user_id(console: ConsoleServer, account: Account) -> str:
    return str(console.api("GET", "/auth/me", account).json()["id"])


class TestAdmin:
    def test_a_user_created_in_the_console_signs_in_and_is_refused_admin(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        sign_in(page, console, console.admin)
        nav(page, "Admin")
        expect(page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()
        expect(page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
        shoot(page, screenshots, "admin-overview")

        name, password = f"c{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        page.get_by_role("tab", name="Users").click()
        page.get_by_role("button", name="New user").click()
        form = page.get_by_role("form", name="New user")
        form.get_by_label("Username").fill(name)
        form.get_by_label("Email").fill(f"{name}@example.com")
        form.get_by_label("Password").fill(password)
        shoot(page, screenshots, "admin-new-user")
        form.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("status")).to_contain_text(f"Created user {name}")
        row = page.get_by_role("row").filter(has_text=name)
        expect(row).to_contain_text(f"{name}@example.com")
        expect(row.locator(".badge.role-user")).to_have_text("user")
        expect(row.locator(".badge.status-active")).to_be_visible()
        shoot(page, screenshots, "admin-users")

        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Username or email").fill(name)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".who")).to_have_text(name)
        main_nav = page.get_by_role("navigation", name="Main")
        expect(main_nav.get_by_role("link", name="Costs")).to_be_visible()
        expect(main_nav.get_by_role("link", name="Admin")).to_have_count(0)

        page.evaluate("location.hash = '#/admin'")
        expect(page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()
        expect(page.get_by_role("alert")).to_have_text("Administrator role required")
        expect(page.get_by_role("tab")).to_have_count(0)
        shoot(page, screenshots, "admin-refused")

    def test_manage_a_user_sessions_and_the_audit_log(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        target = console.new_user()
        session = console.api("POST", "/sessions", target, json={"name": "owned elsewhere"})
        assert session.status_code == 201, session.text
        sign_in(page, console, console.admin)
        nav(page, "Admin")
        page.get_by_role("tab", name="Users").click()
        page.get_by_role("searchbox", name="Search users").fill(target.username)
        row = page.get_by_role("row").filter(has_text=target.username)
        expect(row).to_have_count(1)
        expect(page.get_by_role("row")).to_have_count(2)  # the heading row and theirs

        row.get_by_role("button", name="Reset password").click()
        row.get_by_role("button", name="Yes, reset password").click()
        secret = page.locator(".secret-value")
        expect(secret).to_be_visible()
        temporary = secret.inner_text()
        assert len(temporary) >= 8
        login(console.url, Account(target.username, temporary))

        row.get_by_role("button", name="Make admin").click()
        row.get_by_role("button", name="Yes, make admin").click()
        expect(row.locator(".badge.role-admin")).to_have_text("admin")
        row.get_by_role("button", name="Remove admin").click()
        row.get_by_role("button", name="Yes, remove admin").click()
        expect(row.locator(".badge.role-user")).to_have_text("user")

        row.get_by_role("button", name="Disable").click()
        row.get_by_role("button", name="Cancel").click()
        expect(row.locator(".badge.status-active")).to_be_visible()
        row.get_by_role("button", name="Disable").click()
        row.get_by_role("button", name="Yes, disable").click()
        expect(row.locator(".badge.status-disabled")).to_be_visible()
        refused = httpx.post(
            f"{console.url}/api/v1/auth/login", json={"username": target.username, "password": temporary}
        )
        assert refused.status_code in (401, 403), refused.text
        row.get_by_role("button", name="Enable").click()
        row.get_by_role("button", name="Yes, enable").click()
        expect(row.locator(".badge.status-active")).to_be_visible()

        row.get_by_role("button", name="Budget…").click()
        row.get_by_role("spinbutton").fill("12.5")
        row.get_by_role("button", name="Save").click()
        expect(page.get_by_role("row").filter(has_text=target.username)).to_contain_text("$12.50")

        page.get_by_role("tab", name="Sessions").click()
        session_row = page.get_by_role("row").filter(has_text="owned elsewhere")
        expect(session_row).to_contain_text(target.username)
        shoot(page, screenshots, "admin-sessions")

        page.get_by_role("tab", name="Audit log").click()
        page.get_by_label("Affecting").select_option(label=target.username)
        page.get_by_label("Action").select_option("admin.*")
        audit = page.locator("tbody tr")
        expect(audit.filter(has_text="auth.login_failed")).to_have_count(0)  # the refused sign-in, not admin.*
        expect(audit.filter(has_text="admin.password_reset")).to_have_count(1)
        expect(audit.filter(has_text="admin.user_updated")).to_have_count(5)
        expect(audit.first).to_contain_text(console.admin.username)
        expect(audit.first).to_contain_text("monthly_budget_usd: null → 12.5")
        shoot(page, screenshots, "admin-audit")


class TestApiKeys:
    def test_a_key_is_shown_once_works_and_stops_when_revoked(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        account = console.new_user()
        sign_in(page, console, account)
        nav(page, "API keys")
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        expect(page.get_by_text("No API keys yet")).to_be_visible()

        page.get_by_role("button", name="New API key").click()
        form = page.get_by_role("form", name="New API key")
        form.get_by_label("Name").fill("deploy script")
        form.get_by_role("button", name="Create key").click()
        secret_box = page.locator(".secret")
        expect(secret_box).to_contain_text("shown only this once")
        key = page.locator(".secret-value").inner_text()
        row = page.get_by_role("row").filter(has_text="deploy script")
        expect(row.locator(".badge")).to_have_text("active")
        expect(row).to_contain_text("Never")
        prefix = row.locator("code").inner_text().rstrip("…")
        assert key.startswith(prefix) and len(key) > len(prefix)
        shoot(page, screenshots, "keys-created")

        me = httpx.get(f"{console.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["username"] == account.username

        # A second key that expires: the date shows; and the first key's secret is never shown again.
        page.get_by_role("button", name="New API key").click()
        form.get_by_label("Name").fill("short lived")
        form.get_by_label("Expires").fill(f"{datetime.now(UTC).year + 1}-06-30")
        form.get_by_role("button", name="Create key").click()
        expiring = page.get_by_role("row").filter(has_text="short lived")
        expect(expiring).to_contain_text(f"{datetime.now(UTC).year + 1}")
        nav(page, "Costs")
        nav(page, "API keys")
        expect(page.get_by_role("row").filter(has_text="deploy script")).to_be_visible()
        expect(page.locator(".secret-value")).to_have_count(0)
        assert key not in page.content()
        used = page.get_by_role("row").filter(has_text="deploy script").locator('td[data-label="Last used"]')
        expect(used).to_have_text("just now")

        row = page.get_by_role("row").filter(has_text="deploy script")
        row.get_by_role("button", name="Revoke").click()
        expect(row).to_contain_text("Revoke “deploy script”?")
        row.get_by_role("button", name="Yes, revoke").click()
        expect(page.get_by_role("status")).to_contain_text("Revoked “deploy script”")
        row = page.get_by_role("row").filter(has_text="deploy script")
        expect(row.locator(".badge")).to_have_text("revoked")
        expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
        shoot(page, screenshots, "keys-revoked")
        gone = httpx.get(f"{console.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 401


class TestWebhooks:
    def test_create_test_and_read_the_delivery_log(
        self, page: Any, console: ConsoleServer, screenshots: Path, receiver: list[bytes]
    ) -> None:
        hook_url = console.receiver_url
        account = console.new_user()
        sign_in(page, console, account)
        nav(page, "Webhooks")
        expect(page.get_by_text("No webhooks yet")).to_be_visible()

        page.get_by_role("button", name="New webhook").click()
        form = page.get_by_role("form", name="New webhook")
        form.get_by_role("button", name="Create webhook").click()  # the browser wants a URL first
        form.get_by_label("URL").fill("http://10.0.0.1/hook")
        form.get_by_role("button", name="Create webhook").click()
        expect(form.get_by_role("alert")).to_have_text("Choose at least one event.")
        form.get_by_label("turn.completed").check()
        form.get_by_label("permission.requested").check()
        form.get_by_label("Description").fill("console test")
        form.get_by_role("button", name="Create webhook").click()
        # The API refuses a private address; its message is what the form says.
        expect(form.get_by_role("alert")).to_contain_text("not allowed")
        shoot(page, screenshots, "webhooks-refused")

        form.get_by_label("URL").fill(hook_url)
        form.get_by_role("button", name="Create webhook").click()
        expect(page.get_by_role("form", name="New webhook")).to_have_count(0)
        secret = page.locator(".created-secret .secret-value")
        expect(secret).to_have_text(re.compile(r"^whsec_"))
        first_secret = secret.inner_text()
        card = page.get_by_role("article", name=f"Webhook {hook_url}")
        expect(card.locator(".badge.status-active")).to_be_visible()
        expect(card.get_by_role("list", name="Events")).to_have_text(
            re.compile(r"turn\.completed\s*permission\.requested")
        )
        expect(card).to_contain_text("console test")

        card.get_by_role("button", name="Send test").click()
        log = card.get_by_role("region", name=f"Deliveries of {hook_url}")
        delivery = log.locator("tbody tr").filter(has_text="webhook.test")
        expect(delivery).to_have_count(1)
        expect(delivery.locator(".badge")).to_have_text(re.compile(r"^(pending|succeeded)$"))
        log.get_by_role("button", name="Refresh").click()
        # The log looks again every 5 s while a delivery is pending.
        badge = log.locator("tbody tr").filter(has_text="webhook.test").locator(".badge")
        expect(badge).to_have_text("succeeded", timeout=20_000)
        assert any(b'"webhook.test"' in body for body in receiver)
        listed = console.api("GET", "/webhooks", account).json()["items"]
        deliveries = console.api("GET", f"/webhooks/{listed[0]['id']}/deliveries", account).json()["items"]
        assert [d["event_type"] for d in deliveries] == ["webhook.test"]
        shoot(page, screenshots, "webhooks-log")

        card.get_by_role("button", name="Pause").click()
        expect(card.locator(".badge.status-paused")).to_be_visible()
        expect(card.get_by_role("button", name="Send test")).to_be_disabled()
        card.get_by_role("button", name="Re-enable").click()
        expect(card.locator(".badge.status-active")).to_be_visible()

        card.get_by_role("button", name="Rotate secret").click()
        card.get_by_role("button", name="Yes, rotate secret").click()
        rotated = card.locator(".secret-value")
        expect(rotated).to_have_text(re.compile(r"^whsec_"))
        assert rotated.inner_text() != first_secret

        nav(page, "API keys")
        nav(page, "Webhooks")
        expect(page.get_by_role("article", name=f"Webhook {hook_url}")).to_be_visible()
        expect(page.locator(".secret-value")).to_have_count(0)

        card = page.get_by_role("article", name=f"Webhook {hook_url}")
        card.get_by_role("button", name="Delete").click()
        card.get_by_role("button", name="Yes, delete").click()
        expect(page.get_by_text("No webhooks yet")).to_be_visible()
        assert console.api("GET", "/webhooks", account).json()["total"] == 0


class TestCosts:
    def test_the_chart_tables_and_budget_after_a_turn(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        account = console.new_user()
        uid = user_id(console, account)
        assert console.api("PATCH", f"/admin/users/{uid}", json={"monthly_budget_usd": 5}).status_code == 200
        spent = 0.0
        for name, prompts in (("release notes", ["draft the release notes", "shorter please"]), ("triage", ["hi"])):
            created = console.api(
                "POST", "/sessions", account, json={"name": name, "permission_mode": "bypassPermissions"}
            )
            assert created.status_code == 201, created.text
            for prompt in prompts:
                turn = console.api(
                    "POST", f"/sessions/{created.json()['id']}/query", account, json={"message": prompt, "wait": True}
                )
                assert turn.status_code == 200, turn.text
                spent += turn.json()["cost_usd"]
        assert spent > 0

        sign_in(page, console, account)
        nav(page, "Costs")
        chart = page.get_by_role("img", name="Spend per day over the last 30 days (US dollars)")
        expect(chart).to_be_visible()
        assert chart.evaluate("el => el.namespaceURI") == "http://www.w3.org/2000/svg"
        bars = chart.locator(".chart-bar")
        expect(bars).to_have_count(30)
        assert float(bars.last.get_attribute("height") or 0) > 10
        assert float(bars.first.get_attribute("height") or 0) == 0
        today = chart.locator(".chart-day").last.locator("title")
        expect(today).to_contain_text("3 turns")

        budget = page.get_by_role("region", name="Monthly budget")
        expect(budget).to_contain_text("left of $5.00")
        meter = budget.get_by_role("meter")
        assert float(meter.evaluate("el => el.value")) > 0 and meter.evaluate("el => el.max") == 5

        page.get_by_text("The same numbers as a table").click()
        table_rows = page.locator(".chart-table tbody tr")
        expect(table_rows).to_have_count(30)
        expect(table_rows.first).to_contain_text("$0.")
        page.get_by_text("The same numbers as a table").click()
        expect(table_rows.first).to_be_hidden()

        by_session = page.get_by_role("region", name="By session")
        expect(by_session.get_by_role("link", name="release notes")).to_be_visible()
        expect(by_session.get_by_role("row").filter(has_text="release notes")).to_contain_text("2")
        expect(page.get_by_role("region", name="By model")).to_contain_text("offline-echo-1")
        page.get_by_role("button", name="Today").click()
        expect(page.get_by_role("button", name="Today")).to_have_attribute("aria-pressed", "true")
        expect(by_session.get_by_role("link", name="triage")).to_be_visible()
        page.get_by_role("button", name="This month").click()
        page.mouse.move(0, 0)
        shoot(page, screenshots, "costs")
        if os.environ.get("CONSOLE_DOCS_SCREENSHOTS"):
            # The README's picture of this screen: `CONSOLE_DOCS_SCREENSHOTS=1 pytest tests/console/test_account.py`.
            DOCS.mkdir(exist_ok=True)
            page.screenshot(path=str(DOCS / "console-costs.png"))
