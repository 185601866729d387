"""The session screen: the conversation as it streams, tool cards, the approval card (also after a reload), the
Files panel, agent output shown as text only, and one user's sessions out of another's sight."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Account, ConsoleServer, sign_in

DOCS = Path(__file__).resolve().parents[2] / "docs"
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TURN_S = 90_000  # ms: a turn of the offline model, on a busy machine


def new_session(console: ConsoleServer, account: Account, **body: Any) -> str:
    r = console.api("POST", "/sessions", account, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    expect(box).to_be_enabled(timeout=TURN_S)
    box.fill(text)
    box.press("Enter")


def latest_seq(console: ConsoleServer, account: Account, sid: str) -> int:
    """The session's latest stored seq, from the `connected` record of its event stream."""
    url = f"{console.url}/api/v1/sessions/{sid}/events"
    with httpx.stream("GET", url, headers=account.headers, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                return int(json.loads(line[5:])["data"]["latest_seq"])
    raise AssertionError("no connected record")


def conversation(page: Any) -> Any:
    return page.get_by_role("log", name="Conversation")


def wait_turns(page: Any, n: int) -> None:
    """Until `n` turns have ended (each shows its cost line) and the prompt box is usable again."""
    expect(conversation(page).locator(".turn-result")).to_have_count(n, timeout=TURN_S)
    expect(page.get_by_label("Message", exact=True)).to_be_enabled(timeout=TURN_S)


class TestConversation:
    def test_a_bash_call_streams_in_as_a_card_with_its_output(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        sign_in(page, console, user)
        page.get_by_role("button", name="New session").click()
        page.get_by_label("Name").fill("Echo check")
        page.get_by_label("Permission mode").select_option(label="Never ask (bypass)")
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("heading", name="Echo check")).to_be_visible()
        expect(page.locator(".live")).to_have_text("Live", timeout=30_000)

        send(page, "run: echo hi")
        log = conversation(page)
        expect(log.locator(".msg-user")).to_contain_text("run: echo hi")
        card = log.get_by_role("article", name="Tool call Bash")
        expect(card).to_be_visible(timeout=TURN_S)
        expect(card.locator(".tool-summary")).to_have_text("echo hi")
        expect(card.locator(".tool-output")).to_contain_text("hi", timeout=TURN_S)
        expect(card.locator(".badge")).to_have_text("done")
        expect(log.locator(".msg-assistant").last).to_contain_text("Done.", timeout=TURN_S)
        wait_turns(page, 1)
        expect(log.locator(".turn-result")).to_contain_text("Turn completed")
        expect(log.locator(".turn-result")).to_contain_text("tokens")
        expect(page.locator(".session-badge .badge")).to_have_text("active")
        expect(log.locator(".msg-assistant")).to_have_count(1)  # the streamed text became the answer, once
        page.screenshot(path=str(screenshots / "session-bash.png"))

        # A slow answer streams in piece by piece, into one element that stays where it is.
        send(page, "sleep: 4")
        streaming = log.locator(".msg-assistant.is-streaming")
        expect(streaming).to_have_count(1, timeout=TURN_S)
        top = streaming.evaluate("el => el.getBoundingClientRect().top + window.scrollY")
        expect(streaming).to_contain_text("Slept")
        expect(log.locator(".msg-assistant").last).to_have_text("Slept for 4 seconds.", timeout=TURN_S)
        wait_turns(page, 2)
        expect(log.locator(".msg-assistant")).to_have_count(2)
        expect(streaming).to_have_count(0)
        assert (
            log.locator(".msg-assistant").last.evaluate("el => el.getBoundingClientRect().top + window.scrollY") == top
        )

        # The same conversation after a reload, from the history.
        page.reload()
        log = conversation(page)
        expect(log.get_by_role("article", name="Tool call Bash").locator(".tool-output")).to_contain_text("hi")
        expect(log.locator(".msg-assistant").first).to_contain_text("Done.")
        expect(log.locator(".turn-result")).to_have_count(2)
        expect(log.locator(".msg-assistant")).to_have_count(2)

    def test_an_approval_survives_a_reload_and_the_file_appears(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        sid = new_session(console, user, name="Write a note", permission_mode="default")
        refused: list[str] = []  # what the page's Content-Security-Policy blocked: nothing, please
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.set_viewport_size(WIDE)
        sign_in(page, console, user)
        page.goto(f"{console.url}/#/sessions/{sid}")
        expect(page.get_by_role("heading", name="Write a note")).to_be_visible()
        # Two directives in one message: Shift+Enter makes the new line, Enter sends.
        box = page.get_by_label("Message", exact=True)
        expect(box).to_be_enabled(timeout=TURN_S)
        box.press_sequentially("run: echo hi")
        box.press("Shift+Enter")
        box.press_sequentially("write note.txt: hello console")
        box.press("Enter")
        log = conversation(page)
        expect(log.locator(".msg-user .msg-text")).to_have_text("run: echo hi\nwrite note.txt: hello console")
        bash = log.get_by_role("article", name="Tool call Bash")
        expect(bash.locator(".tool-output")).to_contain_text("hi", timeout=TURN_S)

        card = page.get_by_role("group", name="Approve Write")
        expect(card).to_be_visible(timeout=TURN_S)
        expect(card.locator(".approval-summary")).to_contain_text("file_path: note.txt")
        expect(card.locator(".approval-summary")).to_contain_text("content: hello console")
        expect(card.locator(".approval-expiry")).to_contain_text("expires at")
        expect(page.locator(".session-badge .badge")).to_have_text("waiting")
        expect(log.get_by_role("article", name="Tool call Write").locator(".badge")).to_have_text("awaiting approval")
        expect(page.get_by_role("tab", name="Conversation")).to_contain_text("1 to approve")
        expect(box).to_be_disabled()
        page.screenshot(path=str(screenshots / "session-approval.png"))
        if os.environ.get("CONSOLE_DOCS_SCREENSHOTS"):  # the README's pictures, made on purpose only
            DOCS.mkdir(exist_ok=True)
            page.evaluate("window.scrollTo(0, 0)")  # the header too: it all fits in 1280x800
            page.screenshot(path=str(DOCS / "console-session.png"))
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(screenshots / "session-approval-phone.png"))
        page.set_viewport_size(WIDE)

        # Still there after a reload, with its expiry (read back from the event log).
        page.reload()
        card = page.get_by_role("group", name="Approve Write")
        expect(card).to_be_visible()
        expect(card.locator(".approval-expiry")).to_contain_text("expires at")
        card.get_by_role("button", name="Allow", exact=True).click()
        expect(card).to_have_count(0)
        expect(conversation(page).locator(".note-allow")).to_contain_text("Write allowed")
        wait_turns(page, 1)
        write = conversation(page).get_by_role("article", name="Tool call Write")
        expect(write.locator(".badge")).to_have_text("done")

        page.get_by_role("tab", name="Files").click()
        entry = page.get_by_role("button", name="note.txt")
        expect(entry).to_be_visible()
        entry.click()
        expect(page.get_by_label("Contents of note.txt")).to_have_text("hello console")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download all (.tar.gz)").click()
        assert "ticket=" in download.value.url and "Bearer" not in download.value.url
        assert download.value.failure() is None
        with page.expect_download() as download:
            page.locator(".file-viewer").get_by_role("button", name="Download").click()
        assert download.value.suggested_filename == "note.txt"
        assert Path(download.value.path()).read_text() == "hello console"
        page.screenshot(path=str(screenshots / "session-files.png"))
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(screenshots / "session-files-phone.png"))
        page.get_by_role("tab", name="Conversation").click()
        page.screenshot(path=str(screenshots / "session-phone.png"))
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshots / "session-phone-top.png"))
        page.set_viewport_size(WIDE)

        # Decided on another device: the card goes away here too.
        send(page, "write other.txt: no")
        card = page.get_by_role("group", name="Approve Write")
        expect(card).to_be_visible(timeout=TURN_S)
        pending = console.api("GET", f"/sessions/{sid}/permissions", user).json()["items"]
        request_id = next(p["id"] for p in pending if p["decision"] is None)
        r = console.api("POST", f"/sessions/{sid}/permissions/{request_id}", user, json={"decision": "deny"})
        assert r.status_code == 200, r.text
        expect(card).to_have_count(0)
        expect(conversation(page).locator(".note-deny")).to_contain_text("Write denied")
        wait_turns(page, 2)

        # Allowed and remembered: the answer says which rule the session keeps.
        send(page, "write b.txt: yes")
        card = page.get_by_role("group", name="Approve Write")
        card.get_by_role("button", name="Allow and remember for this session").click()
        expect(card).to_have_count(0)
        expect(conversation(page).locator(".note-allow").last).to_contain_text("remembered for this session: Write")
        wait_turns(page, 3)
        assert console.api("GET", f"/sessions/{sid}", user).json()["allowed_tools"] == ["Write"]
        assert refused == []

    def test_agent_output_is_text_never_html(self, page: Any, console: ConsoleServer, screenshots: Path) -> None:
        user = console.new_user()
        sid = new_session(console, user, name="<b>bold?</b>", permission_mode="bypassPermissions")
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        sign_in(page, console, user)
        page.goto(f"{console.url}/#/sessions/{sid}")
        expect(page.get_by_role("heading", name="<b>bold?</b>")).to_be_visible()

        send(page, "<img src=x onerror=alert(1)>")
        log = conversation(page)
        expect(log.locator(".msg-assistant")).to_contain_text("Echo: <img src=x onerror=alert(1)>", timeout=TURN_S)
        wait_turns(page, 1)
        send(page, "run: echo '<script>alert(2)</script>'")
        card = log.get_by_role("article", name="Tool call Bash")
        expect(card.locator(".tool-output")).to_contain_text("<script>alert(2)</script>", timeout=TURN_S)
        wait_turns(page, 2)
        expect(log.locator(".msg-user .msg-text").first).to_have_text("<img src=x onerror=alert(1)>")
        assert log.locator("img").count() == 0
        assert log.locator("script").count() == 0
        assert page.locator("b").count() == 0
        page.screenshot(path=str(screenshots / "session-xss.png"))
        page.reload()
        expect(conversation(page).locator(".msg-assistant").first).to_contain_text("Echo: <img")
        assert conversation(page).locator("img").count() == 0
        assert dialogs == []


class TestFiles:
    def test_folders_open_lazily_big_files_say_why_and_binary_files_download(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        sid = new_session(console, user, name="Files", permission_mode="bypassPermissions")
        message = "\n".join(
            (
                "run: mkdir -p sub/deeper && echo nested > sub/deeper/n.txt",
                "run: yes a | head -c 1100000 > big.txt",
                "run: printf 'PK\\000\\001\\002' > blob.bin",
            )
        )
        r = console.api("POST", f"/sessions/{sid}/query", user, json={"message": message, "wait": True})
        assert r.status_code == 200, r.text
        sign_in(page, console, user)
        page.goto(f"{console.url}/#/sessions/{sid}")
        page.get_by_role("tab", name="Files").click()
        tree = page.get_by_role("list", name="Working directory")
        expect(tree.get_by_role("button", name="sub/")).to_have_attribute("aria-expanded", "false")
        expect(tree.get_by_role("button", name="n.txt")).to_have_count(0)
        tree.get_by_role("button", name="sub/").click()
        tree.get_by_role("button", name="deeper/").click()
        tree.get_by_role("button", name="n.txt").click()
        expect(page.get_by_label("Contents of sub/deeper/n.txt")).to_have_text("nested")

        tree.get_by_role("button", name="big.txt").click()
        expect(page.locator(".file-viewer [role=alert]")).to_be_visible()
        expect(page.locator(".file-viewer")).to_contain_text("Download it to see all of it")

        tree.get_by_role("button", name="blob.bin").click()
        expect(page.locator(".file-viewer")).to_contain_text("A binary file")
        with page.expect_download() as download:
            page.locator(".file-viewer").get_by_role("button", name="Download").click()
        assert Path(download.value.path()).read_bytes() == b"PK\x00\x01\x02"
        page.screenshot(path=str(screenshots / "session-files-binary.png"))

        # The tree stays open across a refresh (a turn's end refreshes it).
        page.get_by_role("button", name="Refresh").click()
        expect(tree.get_by_role("button", name="n.txt")).to_be_visible()


class TestActions:
    def test_interrupt_pause_resume_fork_archive_and_delete(
        self, page: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        user = console.new_user()
        sid = new_session(console, user, name="Busy one", permission_mode="bypassPermissions")
        sign_in(page, console, user)
        page.goto(f"{console.url}/#/sessions/{sid}")
        status = page.locator(".session-badge .badge")

        send(page, "sleep: 30")
        expect(status).to_have_text("processing", timeout=TURN_S)
        expect(page.get_by_label("Message", exact=True)).to_be_disabled()
        page.locator(".session-header").get_by_role("button", name="Interrupt").click()
        expect(conversation(page).locator(".turn-result")).to_contain_text("interrupted", timeout=TURN_S)
        expect(status).to_have_text("active")

        page.get_by_role("button", name="Pause").click()
        # pausing stops the agent process and resuming may start one: seconds on a loaded machine
        expect(status).to_have_text("paused", timeout=TURN_S)
        send_box = page.get_by_label("Message", exact=True)
        send_box.fill("hello")
        send_box.press("Enter")
        expect(page.locator(".prompt [role=alert]")).to_contain_text("paused")
        page.get_by_role("button", name="Resume").click()
        expect(status).to_have_text("active", timeout=TURN_S)
        expect(page.locator(".prompt [role=alert]")).to_have_count(0)

        page.get_by_role("button", name="Fork").click()
        dialog = page.get_by_role("dialog", name="Fork this session")
        dialog.get_by_label("Name of the fork").fill("Busy one, second try")
        page.screenshot(path=str(screenshots / "session-fork.png"))
        dialog.get_by_role("button", name="Fork").click()
        expect(page.get_by_role("heading", name="Busy one, second try")).to_be_visible()
        assert sid not in page.url
        expect(conversation(page).locator(".msg-user")).to_have_count(1)
        expect(conversation(page).locator(".msg-user")).to_contain_text("sleep: 30")

        page.get_by_role("button", name="Archive").click()
        expect(page.locator(".notice").filter(has_text="Archived:")).to_be_visible(timeout=TURN_S)
        expect(page.locator(".session-badge .badge")).to_have_text("archived")
        page.get_by_role("button", name="Delete").click()
        dialog = page.get_by_role("dialog", name="Delete this session?")
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(screenshots / "session-delete-phone.png"))
        dialog.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
        expect(page.get_by_role("link", name="Busy one, second try")).to_have_count(0)
        expect(page.get_by_role("link", name="Busy one", exact=True)).to_be_visible()


class TestReplay:
    def test_a_dropped_stream_resumes_from_the_last_seq_and_loses_nothing(
        self, page: Any, console: ConsoleServer
    ) -> None:
        user = console.new_user()
        sid = new_session(console, user, name="Flaky network", permission_mode="bypassPermissions")
        r = console.api("POST", f"/sessions/{sid}/query", user, json={"message": "hello", "wait": True})
        assert r.status_code == 200, r.text
        latest = latest_seq(console, user, sid)
        requests: list[Any] = []

        def events(route: Any) -> None:
            requests.append(route.request)
            if len(requests) == 1:
                # The first connection says hello and drops, like a flaky network.
                data = {"status": "active", "latest_seq": latest, "pending_permission_requests": []}
                frame = {"type": "connected", "session_id": sid, "ts": "2026-01-01T00:00:00Z", "data": data}
                body = f"event: connected\ndata: {json.dumps(frame)}\n\n"
                route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
                return
            if len(requests) == 2:
                # While the page is away, a whole turn happens.
                message = {"message": "run: echo while away", "wait": True}
                answer = console.api("POST", f"/sessions/{sid}/query", user, json=message)
                assert answer.status_code == 200, answer.text
            route.continue_()

        page.route(re.compile(r"/api/v1/sessions/[0-9a-f-]+/events\?partial=1"), events)
        sign_in(page, console, user)
        page.goto(f"{console.url}/#/sessions/{sid}")
        log = conversation(page)
        card = log.get_by_role("article", name="Tool call Bash")
        expect(card.locator(".tool-output")).to_contain_text("while away", timeout=TURN_S)
        expect(log.locator(".turn-result")).to_have_count(2)
        expect(log.locator(".tool-card")).to_have_count(1)
        expect(log.locator(".msg-user")).to_have_count(2)
        expect(log.locator(".msg-assistant")).to_have_count(2)
        expect(page.locator(".live")).to_have_text("Live")
        resumed = requests[1]
        assert resumed.headers.get("last-event-id") == str(latest)
        assert f"after_seq={latest}" in resumed.url
        assert resumed.headers.get("authorization", "").startswith("Bearer ")


class TestPrivacy:
    def test_another_user_sees_none_of_the_sessions(
        self, page: Any, browser: Any, console: ConsoleServer, screenshots: Path
    ) -> None:
        owner = console.new_user()
        ids = {
            name: new_session(console, owner, name=name, permission_mode=mode)
            for name, mode in (
                ("Security review of the upload path", "plan"),
                ("Nightly dependency report", "default"),
                ("Fix the flaky login test", "default"),
                ("Draft the release notes", "acceptEdits"),
                ("Refactor the billing module", "bypassPermissions"),
            )
        }
        for name, message in (
            ("Refactor the billing module", "run: ls"),
            ("Draft the release notes", "write NOTES.md: # Release notes"),
            ("Fix the flaky login test", "write fix.txt: retry once"),  # waits for an approval
        ):
            r = console.api("POST", f"/sessions/{ids[name]}/query", owner, json={"message": message, "wait": True})
            assert r.status_code in (200, 202), r.text
        r = console.api("POST", f"/sessions/{ids['Nightly dependency report']}/pause", owner)
        assert r.status_code == 200, r.text
        mine = ids["Refactor the billing module"]
        page.set_viewport_size(WIDE)
        sign_in(page, console, owner)
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(5)
        expect(page.get_by_role("link", name="Refactor the billing module")).to_be_visible()
        page.screenshot(path=str(screenshots / "sessions-list.png"))
        if os.environ.get("CONSOLE_DOCS_SCREENSHOTS"):
            DOCS.mkdir(exist_ok=True)
            page.screenshot(path=str(DOCS / "console-sessions.png"))

        other = console.new_user()
        context = browser.new_context(viewport=WIDE)
        try:
            stranger = context.new_page()
            sign_in(stranger, console, other)
            expect(stranger.get_by_text("No sessions yet")).to_be_visible()
            expect(stranger.locator("tbody tr")).to_have_count(0)
            stranger.goto(f"{console.url}/#/sessions/{mine}")
            expect(stranger.get_by_role("heading", name="Session not found")).to_be_visible()
            expect(stranger.get_by_role("alert")).to_contain_text("does not exist")
            expect(stranger.get_by_text("Refactor the billing module")).to_have_count(0)
            stranger.screenshot(path=str(screenshots / "session-not-found.png"))
        finally:
            context.close()
