"""Report routes: making a report of a session, reading, listing, downloading each format, and ownership."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from agent_api.errors import NotFound
from agent_api.models.base import utcnow
from agent_api.reports import collect, render, service
from tests.conftest import UserAccount, Users, app_state, assert_error_shape
from tests.reports.conftest import Factory, History, ReportsApi, ToolUse, validate_report_json

SCRIPT = "<script>alert('pwned')</script>"


class TestUnauthenticated:
    async def test_every_route_needs_a_token(self, client: httpx.AsyncClient) -> None:
        some = uuid.uuid4()
        for method, path in [
            ("GET", "/api/v1/reports"),
            ("GET", "/api/v1/reports/schema"),
            ("GET", f"/api/v1/reports/{some}"),
            ("GET", f"/api/v1/reports/{some}/download?format=json"),
            ("POST", f"/api/v1/sessions/{some}/report"),
        ]:
            assert_error_shape(await client.request(method, path), 401, "unauthorized")


class TestCreateFromSession:
    async def test_report_holds_prompt_answer_timeline_usage_and_files(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner, name="Build the site")
        (factory.workdir(sid) / "notes.txt").write_text("12345")
        await factory.turn(
            sid,
            History(
                prompt="write notes.txt and list",
                answer="All done: notes.txt written",
                tools=[
                    ToolUse("Write", {"file_path": "notes.txt", "content": "12345"}, "File created"),
                    ToolUse("Bash", {"command": "ls"}, {"stdout": "notes.txt", "stderr": ""}),
                ],
            ),
        )
        body = await reports.create(sid)
        assert body["session_id"] == str(sid) and body["task_id"] is None and body["task_execution_id"] is None
        assert body["title"] == "Build the site" and body["status"] == "completed"
        assert body["total_cost_usd"] == pytest.approx(0.0125)
        assert (body["total_input_tokens"], body["total_output_tokens"], body["duration_ms"]) == (120, 45, 1500)
        data = body["data"]
        validate_report_json(data)
        assert data["report_id"] == body["id"] and data["source"]["kind"] == "session"
        assert data["prompt"] == "write notes.txt and list"
        assert data["final_answer"] == "All done: notes.txt written"
        assert data["session"]["status"] == "active" and data["errors"] == []
        kinds = [(e["type"], e.get("role") or e.get("name")) for e in data["timeline"]["entries"]]
        assert kinds == [("message", "user"), ("tool_call", "Write"), ("tool_call", "Bash"), ("message", "assistant")]
        bash = data["timeline"]["entries"][2]
        assert bash["output"] == "notes.txt" and '"command": "ls"' in bash["input"]
        assert data["usage"]["turns"] == 1 and data["usage"]["tool_calls"] == 2
        assert [(f["path"], f["size_bytes"], f["kind"]) for f in data["files"]["items"]] == [("notes.txt", 5, "file")]
        assert data["files"]["available"] is True and data["files"]["total_bytes"] == 5

    async def test_title_from_the_body_and_empty_session(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        body = await reports.create(sid, title="Weekly audit")
        assert body["title"] == "Weekly audit" and body["status"] == "empty"
        assert body["data"]["prompt"] is None and body["data"]["final_answer"] is None
        assert body["data"]["timeline"] == {"entries": [], "total": 0, "omitted": 0}
        assert body["duration_ms"] is None
        validate_report_json(body["data"])

    async def test_bad_body_is_422_and_makes_nothing(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        r = await client.post(f"/api/v1/sessions/{sid}/report", json={"title": "x" * 301}, headers=reports.user.headers)
        assert_error_shape(r, 422, "validation_error")
        assert (await reports.list(session_id=str(sid)))["total"] == 0

    async def test_failed_turn_is_a_failed_report_with_its_errors(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        await factory.turn(sid, History(answer="API error: overloaded", is_error=True, errors=["max retries"]))
        body = await reports.create(sid)
        assert body["status"] == "failed"
        assert body["data"]["errors"] == ["turn 1: max retries", "turn 1: API error: overloaded"]
        assert body["error_message"] == "turn 1: max retries"

    async def test_symlinks_are_listed_never_followed(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        wd = factory.workdir(sid)
        os.symlink("/etc/passwd", wd / "passwd-link")
        os.symlink("/etc", wd / "etc-link")
        (wd / "sub").mkdir()
        (wd / "sub" / "a.txt").write_text("abc")
        files = (await reports.create(sid))["data"]["files"]
        assert [(f["path"], f["kind"], f["size_bytes"]) for f in files["items"]] == [
            ("etc-link", "symlink", 0),
            ("passwd-link", "symlink", 0),
            ("sub/a.txt", "file", 3),
        ]
        assert files["total_bytes"] == 3  # nothing behind the links was counted

    async def test_long_history_keeps_the_first_and_last_entries(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        tools = [ToolUse("Bash", {"command": f"echo {n}"}, "y" * 5000) for n in range(collect.TIMELINE_HALF * 2 + 48)]
        await factory.turn(sid, History(prompt="p" * 30_000, answer="finished", tools=tools))
        data = (await reports.create(sid))["data"]
        timeline = data["timeline"]
        assert timeline["total"] == len(tools) + 2 and timeline["omitted"] == 50
        entries = timeline["entries"]
        assert len(entries) == 2 * collect.TIMELINE_HALF
        assert entries[0]["type"] == "message" and entries[1]["input"] == '{"command": "echo 0"}'
        assert entries[-1]["text"] == "finished" and entries[-2]["input"] == f'{{"command": "echo {len(tools) - 1}"}}'
        assert entries[1]["truncated"] is True and len(entries[1]["output"]) == collect.TOOL_IO_CHARS
        assert len(data["prompt"]) == collect.LONG_TEXT_CHARS
        validate_report_json(data)

    async def test_foreign_session_is_404(self, client: httpx.AsyncClient, factory: Factory, users: Users) -> None:
        alice, bob = await users.create(), await users.create()
        sid = await factory.session(alice)
        r = await client.post(f"/api/v1/sessions/{sid}/report", headers=bob.headers)
        assert_error_shape(r, 404, "session_not_found")
        assert (await ReportsApi(client, alice).list())["total"] == 0


class TestServiceForTasks:
    async def test_task_execution_report_with_an_error(self, app: object, factory: Factory, owner: UserAccount) -> None:
        sid = await factory.session(owner)
        await factory.turn(sid, History(answer="partial"))
        task_id, execution_id = uuid.uuid4(), uuid.uuid4()
        async with app_state(app).db.transaction() as db:
            report = await service.create_report(
                db,
                app_state(app),
                sid,
                user_id=uuid.UUID(owner.id),
                title="Nightly run",
                task_id=task_id,
                task_execution_id=execution_id,
                error="timed out after 30 s",
            )
        assert report.status == "failed" and report.error_message == "timed out after 30 s"
        assert report.data["source"] == {
            "kind": "task_execution",
            "session_id": str(sid),
            "task_id": str(task_id),
            "task_execution_id": str(execution_id),
        }
        validate_report_json(report.data)

    async def test_another_users_session_is_not_found(self, app: object, factory: Factory, users: Users) -> None:
        alice, bob = await users.create(), await users.create()
        sid = await factory.session(alice)
        with pytest.raises(NotFound):
            async with app_state(app).db.transaction() as db:
                await service.create_report(db, app_state(app), sid, user_id=uuid.UUID(bob.id))


class TestDownload:
    async def test_three_formats_with_types_and_file_names(
        self, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        await factory.turn(
            sid,
            History(
                prompt=f"print {SCRIPT}",
                answer=f'Printed {SCRIPT} <img src="file:///etc/passwd"> Final answer 42',
                tools=[ToolUse("Bash", {"command": f'echo "{SCRIPT}"'}, SCRIPT)],
            ),
        )
        rid = (await reports.create(sid, title="Escaping <b>check</b>"))["id"]

        html = await reports.download(rid, "html")
        assert html.status_code == 200
        assert html.headers["content-type"] == "text/html; charset=utf-8"
        assert html.headers["content-disposition"] == f'attachment; filename="report-{rid}.html"'
        assert "<script>" not in html.text and "<img" not in html.text and "<b>check" not in html.text
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html.text
        assert "Escaping &lt;b&gt;check&lt;/b&gt;" in html.text

        pdf = await reports.download(rid, "pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == f'attachment; filename="report-{rid}.pdf"'
        assert pdf.content.startswith(b"%PDF")
        reader = PdfReader(io.BytesIO(pdf.content))
        text = " ".join(page.extract_text() for page in reader.pages)
        assert len(reader.pages) >= 1 and "Escaping <b>check</b>" in text and "Final answer 42" in text

        as_json = await reports.download(rid, "json")
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        assert as_json.headers["content-disposition"] == f'attachment; filename="report-{rid}.json"'
        validate_report_json(as_json.json())
        assert SCRIPT in as_json.json()["final_answer"]  # JSON keeps the text as it was; escaping is the HTML's job

    async def test_another_format_is_400(self, factory: Factory, reports: ReportsApi, owner: UserAccount) -> None:
        rid = (await reports.create(await factory.session(owner)))["id"]
        for fmt in ("docx", "HTML", "", "../../etc/passwd"):
            assert_error_shape(await reports.download(rid, fmt), 400, "invalid_format")

    async def test_default_format_is_html(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        rid = (await reports.create(await factory.session(owner)))["id"]
        r = await client.get(f"/api/v1/reports/{rid}/download", headers=reports.user.headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


class TestPdfStoredOnceAndBounded:
    async def test_the_first_download_renders_and_later_ones_read_the_stored_pdf(
        self, app: object, factory: Factory, reports: ReportsApi, owner: UserAccount, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        renders: list[int] = []
        real = render.to_pdf_bounded

        async def counted(html: str, **limits: Any) -> bytes:
            renders.append(len(html))
            return await real(html, **limits)

        monkeypatch.setattr(render, "to_pdf_bounded", counted)
        rid = (await reports.create(await factory.session(owner), title="stored once"))["id"]
        first, second, third = await asyncio.gather(*(reports.download(rid, "pdf") for _ in range(3)))
        assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
        assert first.content == second.content == third.content and first.content.startswith(b"%PDF")
        assert len(renders) == 1  # concurrent first downloads wait for one render
        stored = service.pdf_path(app_state(app), uuid.UUID(rid))
        assert stored.read_bytes() == first.content
        again = await reports.download(rid, "pdf")
        assert again.content == first.content and len(renders) == 1

    @pytest.mark.parametrize(
        "limit", [{"report_render_timeout_s": 0.05}, {"report_render_memory_mb": 48}], ids=["time", "memory"]
    )
    async def test_a_render_past_its_limits_is_413_and_stores_nothing(
        self,
        app: object,
        factory: Factory,
        reports: ReportsApi,
        owner: UserAccount,
        monkeypatch: pytest.MonkeyPatch,
        limit: dict[str, float],
    ) -> None:
        for name, value in limit.items():
            monkeypatch.setattr(app_state(app).settings, name, value)
        rid = (await reports.create(await factory.session(owner), title="too big"))["id"]
        renders: list[str] = []
        real = render.to_pdf_bounded

        async def counted(html: str, **limits: Any) -> bytes:
            renders.append(html)
            return await real(html, **limits)

        monkeypatch.setattr(render, "to_pdf_bounded", counted)
        r = await reports.download(rid, "pdf")
        assert_error_shape(r, 413, "report_too_large")
        assert not service.pdf_path(app_state(app), uuid.UUID(rid)).exists()
        again = await reports.download(rid, "pdf")  # under the same limits it fails at once, with no second render
        assert_error_shape(again, 413, "report_too_large")
        assert len(renders) == 1
        monkeypatch.undo()
        assert (await reports.download(rid, "pdf")).content.startswith(b"%PDF")  # the limits, not the report

    def test_the_api_process_never_loads_weasyprint(self) -> None:
        code = (
            "import sys; from agent_api.app import create_app; from agent_api.reports import service, render;"
            "print('weasyprint' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
        assert out.stdout.strip() == "False"


class TestReadAndList:
    async def test_get_returns_the_stored_snapshot(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        made = await reports.create(sid)
        r = await client.get(f"/api/v1/reports/{made['id']}", headers=reports.user.headers)
        assert r.status_code == 200 and r.json() == made

    async def test_unknown_id_is_404(self, client: httpx.AsyncClient, reports: ReportsApi) -> None:
        r = await client.get(f"/api/v1/reports/{uuid.uuid4()}", headers=reports.user.headers)
        assert_error_shape(r, 404, "report_not_found")
        r = await client.get("/api/v1/reports/not-a-uuid", headers=reports.user.headers)
        assert_error_shape(r, 422, "validation_error")

    async def test_newest_first_paginated_and_filtered(
        self, app: object, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        first, second = await factory.session(owner), await factory.session(owner)
        made = [await reports.create(first), await reports.create(second), await reports.create(second)]
        task_id = uuid.uuid4()
        async with app_state(app).db.transaction() as db:
            from_task = await service.create_report(
                db,
                app_state(app),
                first,
                user_id=uuid.UUID(reports.user.id),
                task_id=task_id,
                task_execution_id=uuid.uuid4(),
            )
        everything = await reports.list(page_size=2)
        assert everything["total"] == 4 and everything["total_pages"] == 2 and everything["page_size"] == 2
        assert [i["id"] for i in everything["items"]] == [str(from_task.id), made[2]["id"]]
        assert "data" not in everything["items"][0]  # the list stays light
        page_two = await reports.list(page_size=2, page=2)
        assert [i["id"] for i in page_two["items"]] == [made[1]["id"], made[0]["id"]]

        by_session = await reports.list(session_id=str(second))
        assert {i["id"] for i in by_session["items"]} == {made[1]["id"], made[2]["id"]}
        assert [i["id"] for i in (await reports.list(task_id=str(task_id)))["items"]] == [str(from_task.id)]
        executions = await reports.list(task_execution_id=str(from_task.task_execution_id))
        assert [i["id"] for i in executions["items"]] == [str(from_task.id)]
        assert (await reports.list(source="task_execution"))["total"] == 1
        assert (await reports.list(source="session"))["total"] == 3
        later = (utcnow() + timedelta(minutes=1)).isoformat()
        assert (await reports.list(created_after=later))["total"] == 0
        assert (await reports.list(created_before=later))["total"] == 4

    async def test_bad_filters_are_422(self, client: httpx.AsyncClient, reports: ReportsApi) -> None:
        for params in ({"source": "elsewhere"}, {"session_id": "nope"}, {"page_size": 101}):
            r = await client.get("/api/v1/reports", params=params, headers=reports.user.headers)
            assert_error_shape(r, 422, "validation_error")


class TestSurvivesItsSession:
    async def test_readable_after_the_session_is_deleted(
        self, client: httpx.AsyncClient, factory: Factory, reports: ReportsApi, owner: UserAccount
    ) -> None:
        sid = await factory.session(owner)
        await factory.turn(sid, History(answer="kept"))
        rid = (await reports.create(sid))["id"]
        assert (await client.delete(f"/api/v1/sessions/{sid}", headers=reports.user.headers)).status_code == 204
        assert not factory.workdir(sid).exists()
        r = await client.get(f"/api/v1/reports/{rid}", headers=reports.user.headers)
        assert r.status_code == 200 and r.json()["data"]["final_answer"] == "kept"
        assert (await reports.download(rid, "pdf")).content.startswith(b"%PDF")
        # A report made after the directory is gone says so rather than listing nothing.
        gone = (await reports.create(sid))["data"]["files"]
        assert gone == {"available": False, "items": [], "total_count": 0, "total_bytes": 0, "truncated": False}


class TestOwnership:
    async def test_another_users_report_is_404_on_every_route(
        self, client: httpx.AsyncClient, factory: Factory, users: Users
    ) -> None:
        alice, bob = await users.create(), await users.create()
        rid = (await ReportsApi(client, alice).create(await factory.session(alice)))["id"]
        bob_api = ReportsApi(client, bob)
        assert_error_shape(await client.get(f"/api/v1/reports/{rid}", headers=bob.headers), 404, "report_not_found")
        for fmt in ("html", "pdf", "json", "docx"):
            assert_error_shape(await bob_api.download(rid, fmt), 404, "report_not_found")
        assert (await bob_api.list())["total"] == 0
        assert (await ReportsApi(client, alice).list())["total"] == 1
