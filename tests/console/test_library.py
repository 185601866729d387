"""The console's templates, tasks and MCP screens: a task run from the console and its report in a sandboxed frame,
a Claude Desktop config imported by file upload with each entry's outcome, and a session started from a template."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.console.conftest import Account, ConsoleServer, sign_in

PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1280, "height": 900}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def policy_violations(page: Any) -> list[str]:
    """Console messages about the Content-Security-Policy refusing something, collected from now on."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None)
    return seen


def both_widths(page: Any, screenshots: Path, name: str, focus: Any = None) -> None:
    """Save the screen at 1280 px and at a 390 px phone width, then go back to wide: the full page or, with `focus`,
    the view with that element scrolled into it (Chromium leaves a sandboxed frame, which runs in a process of its
    own, blank in full-page captures)."""
    for size in (WIDE, PHONE):
        page.set_viewport_size(size)
        path = str(screenshots / f"{name}-{size['width']}.png")
        if focus is None:
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=path, full_page=True)
        else:
            focus.scroll_into_view_if_needed()
            page.screenshot(path=path)
    page.set_viewport_size(WIDE)


class TestTasks:
    def test_a_task_run_from_the_console_shows_its_report(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        name = f"Greeter {secrets.token_hex(3)}"
        page.set_viewport_size(WIDE)
        violations = policy_violations(page)
        sign_in(page, console, user)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Tasks").click()
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

        page.get_by_role("button", name="New task").click()
        form = page.get_by_role("form", name="New task")
        form.get_by_label("Name", exact=True).fill(name)
        form.get_by_label("Prompt template").fill("hello {{name}}")
        expect(form.get_by_label("{{name}}", exact=True)).to_be_visible()  # a default-value field per variable
        form.get_by_label("Permission mode").select_option("bypassPermissions")
        form.get_by_label("Cron").fill("30 9 * * 1-5")
        expect(form.get_by_text("At 09:30 on weekdays (Monday to Friday)")).to_be_visible()
        form.get_by_label("Time zone").fill("Europe/Paris")
        both_widths(page, screenshots, "task-new")
        form.get_by_role("button", name="Create").click()

        expect(page.get_by_role("status")).to_contain_text(f"Task “{name}” created. Next run:")
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name))
        expect(row).to_contain_text("At 09:30 on weekdays (Monday to Friday), Europe/Paris time")
        expect(row).to_contain_text("never")
        both_widths(page, screenshots, "tasks")

        row.get_by_role("link", name=name).click()
        expect(page).to_have_url(re.compile(rf"#/tasks/{UUID}$"))
        expect(page.get_by_role("heading", name=name)).to_be_visible()
        run = page.get_by_role("form", name="Run the task")
        run.get_by_label("{{name}}", exact=True).fill("world")
        expect(run.locator(".lib-preview")).to_have_text("hello world")
        run.get_by_role("button", name="Run now").click()

        execution = page.locator(".lib-exec").first
        expect(execution.locator(".badge")).to_have_text("completed", timeout=90_000)
        expect(execution).to_contain_text("manual")
        expect(execution).to_contain_text("name = world")
        expect(execution).to_contain_text("Echo: hello world")
        expect(execution.get_by_role("link", name="Open session")).to_have_attribute(
            "href", re.compile(rf"^#/sessions/{UUID}$")
        )

        execution.get_by_role("button", name="View report").click()
        frame_element = page.locator("iframe.lib-report-frame")
        expect(frame_element).to_have_attribute("sandbox", "")  # present and empty: no scripts, an opaque origin
        expect(frame_element).to_have_attribute("src", re.compile(r"/api/v1/reports/[0-9a-f-]+/view\?ticket="))
        src = frame_element.get_attribute("src") or ""
        assert user.token not in src
        report = page.frame_locator("iframe.lib-report-frame").locator("body")
        expect(report).to_contain_text(name, timeout=30_000)
        expect(report).to_contain_text("hello world")
        both_widths(page, screenshots, "task-page")
        both_widths(page, screenshots, "task-report", focus=frame_element)

        card = page.get_by_role("region", name="Report")
        for label, check in (("Download JSON", _is_report_json(name)), ("Download PDF", _is_pdf)):
            with page.expect_download() as waiting:
                card.get_by_role("button", name=label).click()
            download = waiting.value
            assert user.token not in download.url and "ticket=" in download.url
            check(Path(download.path()).read_bytes())

        # Back on the list the manual run shows as the last run.
        page.get_by_role("link", name="← Tasks").click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name))
        expect(row.locator(".lib-last-run")).to_have_text("just now")
        assert violations == []


def _is_report_json(title: str) -> Any:
    def check(body: bytes) -> None:
        assert json.loads(body)["title"] == title

    return check


def _is_pdf(body: bytes) -> None:
    assert body.startswith(b"%PDF")


class TestMcpServers:
    def test_an_import_by_file_upload_shows_each_entry_outcome(
        self, page: Any, console: ConsoleServer, screenshots: Path, tmp_path: Path
    ) -> None:
        user = console.new_user()
        existing = {"name": "team-notes", "server_type": "http", "config": {"url": "https://mcp.example.com/notes"}}
        r = console.api("POST", "/mcp-servers", user, json=existing)
        assert r.status_code == 201, r.text
        config = tmp_path / "claude_desktop_config.json"
        config.write_text(
            json.dumps(
                {
                    "mcpServers": {
                        "docs-search": {
                            "type": "http",
                            "url": "https://mcp.example.com/docs",
                            "headers": {"Authorization": "Bearer not-a-real-one"},
                        },
                        "carrier-pigeon": {"type": "pigeon", "url": "https://mcp.example.com/coo"},
                        "team-notes": {"url": "https://mcp.example.com/other-notes"},
                    }
                }
            )
        )

        page.set_viewport_size(WIDE)
        violations = policy_violations(page)
        sign_in(page, console, user)
        page.goto(console.url + "/#/mcp")
        expect(page.get_by_role("heading", name="MCP servers")).to_be_visible()
        expect(page.get_by_role("cell", name="team-notes")).to_be_visible()

        page.get_by_role("button", name="Import").click()
        form = page.get_by_role("form", name="Import a Claude Desktop config")
        form.get_by_label("Config file").set_input_files(str(config))
        both_widths(page, screenshots, "mcp-import")
        form.get_by_role("button", name="Import").click()

        outcome = page.get_by_role("region", name="Import outcome")
        expect(outcome).to_contain_text("1 imported, 1 skipped (name exists), 1 failed")
        expect(outcome.locator(".lib-outcome-imported")).to_contain_text("Imported (1)docs-search")
        expect(outcome.locator(".lib-outcome-skipped")).to_contain_text("team-notes")
        errors = outcome.locator(".lib-outcome-errors")
        expect(errors).to_contain_text("Errors (1)")
        expect(errors).to_contain_text("carrier-pigeon: unknown transport type 'pigeon'")
        imported = page.get_by_role("row").filter(has=page.get_by_role("cell", name="docs-search"))
        expect(imported).to_contain_text("HTTP")
        expect(imported).to_contain_text("on")
        expect(imported).to_contain_text("unknown")
        both_widths(page, screenshots, "mcp-imported")

        # The export arrives as a file (a Blob URL) under the console's policy, secrets masked.
        with page.expect_download() as waiting:
            page.get_by_role("button", name="Export").click()
        download = waiting.value
        assert download.suggested_filename == "mcp-servers.json"
        exported = json.loads(Path(download.path()).read_text())["mcpServers"]
        assert set(exported) == {"docs-search", "team-notes"}
        assert exported["docs-search"]["headers"] == {"Authorization": "***"}

        # A health check of a server nobody runs says so, with its error, and marks the row.
        imported.get_by_role("button", name="Check health").click()
        health = page.get_by_role("region", name="Health check")
        expect(health).to_contain_text("Health of docs-search", timeout=60_000)
        expect(health.locator(".badge")).to_have_text("unhealthy", timeout=60_000)
        expect(health.locator(".error")).not_to_be_empty()
        expect(imported.locator(".badge.status-unhealthy")).to_be_visible()
        both_widths(page, screenshots, "mcp-health")
        assert violations == []

    def test_an_admin_adds_a_server_from_the_catalogue(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        admin = console.new_user(admin=True)
        page.set_viewport_size(WIDE)
        sign_in(page, console, admin)
        page.goto(console.url + "/#/mcp")
        page.get_by_role("button", name="Add server").click()
        form = page.get_by_role("form", name="Add an MCP server")
        kind = form.get_by_label("Kind")
        expect(kind.locator("option")).to_have_text(
            ["Remote server (HTTP)", "Remote server (SSE)", "Command on this host (stdio)", "From the catalogue"]
        )
        kind.select_option("catalogue")
        form.get_by_label("Template").select_option("memory")
        expect(form.get_by_label("MEMORY_FILE_PATH (optional)")).to_be_visible()
        form.get_by_label("Name").fill("team-memory")
        both_widths(page, screenshots, "mcp-add")
        form.get_by_role("button", name="Add").click()
        expect(page.get_by_role("status")).to_contain_text("Server “team-memory” added.")
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="team-memory"))
        expect(row).to_contain_text("Command (stdio)")
        server = console.api("GET", "/mcp-servers?server_type=stdio", admin).json()["items"][0]
        assert server["config"]["command"] == "npx"
        assert "@modelcontextprotocol/server-memory" in server["config"]["args"]


class TestTemplates:
    def test_a_template_made_in_the_console_starts_a_session(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        other = console.new_user()
        name = f"Reviewer {secrets.token_hex(3)}"
        page.set_viewport_size(WIDE)
        violations = policy_violations(page)
        sign_in(page, console, user)
        page.goto(console.url + "/#/templates")
        expect(page.get_by_role("heading", name="Session templates")).to_be_visible()

        page.get_by_role("button", name="New template").click()
        form = page.get_by_role("form", name="New template")
        form.get_by_label("Name").fill(name)
        form.get_by_label("Description").fill("Reviews a change <b>carefully</b> and says what it found.")
        form.get_by_label("Category").select_option("development")
        form.get_by_label("Tags").fill("Review, python")
        form.get_by_label("Permission mode").select_option("bypassPermissions")
        form.get_by_label("Initial message").fill("hello from the template")
        both_widths(page, screenshots, "template-new")
        form.get_by_role("button", name="Create").click()

        card = page.get_by_role("article", name=name)
        expect(card).to_contain_text("Reviews a change <b>carefully</b>")  # text, never markup
        expect(card).to_contain_text("#review")
        expect(card).to_contain_text("Never ask (bypass)")
        expect(card).to_contain_text("Private")

        # Search finds it by a tag's prefix; sharing it makes it public and names a user.
        page.get_by_label("Search templates").fill("revi")
        expect(page.get_by_role("article")).to_have_count(1)
        card.get_by_role("button", name="Share").click()
        share = page.get_by_role("form", name=f"Share {name}")
        share.get_by_label("Public").check()
        share.get_by_label("Shared with").fill(_user_id(console, other))
        share.get_by_role("button", name="Save sharing").click()
        expect(page.get_by_role("status")).to_contain_text("is now public and shared with 1 user")
        expect(card).to_contain_text("Public")
        seen = console.api("GET", "/session-templates?scope=public", other).json()["items"]
        assert name in [t["name"] for t in seen]
        both_widths(page, screenshots, "templates")

        card.get_by_role("button", name="Start a session").click()
        expect(page).to_have_url(re.compile(rf"#/sessions/{UUID}$"))
        session_id = page.url.rsplit("/", 1)[1]
        session = console.api("GET", f"/sessions/{session_id}", user).json()
        template_id = _template_id(console, user, name)
        assert session["template_id"] == template_id
        assert session["permission_mode"] == "bypassPermissions"
        used = console.api("GET", f"/session-templates/{template_id}", user).json()
        assert used["usage_count"] == 1
        assert violations == []


def _user_id(console: ConsoleServer, account: Account) -> str:
    return str(console.api("GET", "/auth/me", account).json()["id"])


def _template_id(console: ConsoleServer, account: Account, name: str) -> str:
    items = console.api("GET", "/session-templates?scope=my", account).json()["items"]
    return next(t["id"] for t in items if t["name"] == name)
