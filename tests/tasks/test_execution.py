"""Task executions end to end through the real SDK, the CLI and the offline model: states, report, timeout, cancel."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from agent_api.tasks import runner
from tests.conftest import SessionsApi, assert_error_shape, wait_until
from tests.reports.conftest import validate_report_json
from tests.tasks.conftest import TASKS, TasksApi

pytestmark = pytest.mark.slow


class TestExecution:
    async def test_runs_to_a_report_in_three_formats(self, tasks: TasksApi) -> None:
        t = await tasks.create(
            name="Greeter",
            prompt_template="run: echo '<script>alert({{n}})</script>' {{word}}",
            variables={"word": "default"},
            permission_mode="bypassPermissions",
        )
        r = await tasks.execute(t["id"], n="1", word="$(touch pwned)")
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] in ("queued", "running") and accepted["trigger_type"] == "manual"
        # Values are inserted as text, never evaluated: the prompt shows them verbatim.
        assert accepted["prompt"] == "run: echo '<script>alert(1)</script>' $(touch pwned)"
        done = await tasks.wait_finished(accepted["id"])
        assert done["status"] == "completed", done
        assert done["session_id"] and done["report_id"] and done["duration_ms"] > 0
        assert done["total_cost_usd"] > 0 and done["result_data"]["turn_status"] == "completed"
        assert "<script>alert(1)</script>" in done["result_data"]["result"]
        session = await SessionsApi(tasks.client, tasks.user).get(done["session_id"])
        assert session["status"] == "completed" and session["metadata"]["task_execution_id"] == done["id"]
        assert (await tasks.client.get(f"{TASKS}/{t['id']}", headers=tasks.user.headers)).json()["execution_count"] == 1

        base = f"/api/v1/reports/{done['report_id']}/download"
        h = tasks.user.headers
        html = await tasks.client.get(base, params={"format": "html"}, headers=h)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "<script>alert(1)</script>" not in html.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html.text
        pdf = await tasks.client.get(base, params={"format": "pdf"}, headers=h)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.headers["content-disposition"].endswith('.pdf"')
        reader = PdfReader(io.BytesIO(pdf.content))
        assert len(reader.pages) >= 1 and "Greeter" in "".join(p.extract_text() for p in reader.pages)
        document = await tasks.client.get(base, params={"format": "json"}, headers=h)
        assert document.status_code == 200
        validate_report_json(document.json())
        assert_error_shape(await tasks.client.get(base, params={"format": "docx"}, headers=h), 400)

    async def test_idempotency_key_replays_the_first_execution(self, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="hello")
        key = {"Idempotency-Key": "run-once-123"}
        first = await tasks.execute(t["id"], headers=key)
        second = await tasks.execute(t["id"], headers=key)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers.get("idempotent-replay") == "true"
        await tasks.wait_finished(first.json()["id"])
        assert (await tasks.executions(t["id"]))["total"] == 1

    async def test_timeout_marks_timed_out_and_still_reports(self, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="sleep: 60", timeout_seconds=5, permission_mode="bypassPermissions")
        accepted = (await tasks.execute(t["id"])).json()
        done = await tasks.wait_finished(accepted["id"], timeout=60)
        assert done["status"] == "timed_out" and done["error_code"] == "timed_out"
        assert done["report_id"] is not None
        assert 4_000 <= done["duration_ms"] < 40_000

    async def test_cancel_a_running_execution(self, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="sleep: 60", permission_mode="bypassPermissions")
        accepted = (await tasks.execute(t["id"])).json()

        async def running() -> bool:
            return (await tasks.execution(accepted["id"]))["status"] == "running"

        await wait_until(running, 30)
        r = await tasks.client.post(f"{TASKS}/executions/{accepted['id']}/cancel", headers=tasks.user.headers)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        done = await tasks.wait_finished(accepted["id"])
        assert done["status"] == "cancelled" and done["finished_at"] is not None
        assert done["duration_ms"] < 40_000

        async def turn_stopped() -> bool:
            session = await SessionsApi(tasks.client, tasks.user).get(done["session_id"])
            return session["status"] not in ("processing", "waiting")

        await wait_until(turn_stopped, 30)

    async def test_without_report_when_the_task_says_so(self, tasks: TasksApi) -> None:
        t = await tasks.create(prompt_template="hello", generate_report=False)
        done = await tasks.wait_finished((await tasks.execute(t["id"])).json()["id"])
        assert done["status"] == "completed" and done["report_id"] is None


class TestFromTemplate:
    async def test_the_session_takes_the_template_and_the_tasks_own_settings(self, tasks: TasksApi) -> None:
        r = await tasks.client.post(
            "/api/v1/session-templates",
            json={
                "name": "T",
                "system_prompt": "From the template",
                "permission_mode": "bypassPermissions",
                "seed_files": [{"path": "data.txt", "content": "seeded"}],
            },
            headers=tasks.user.headers,
        )
        template = r.json()
        t = await tasks.create(prompt_template="read data.txt", template_id=template["id"], allowed_tools=["Read"])
        done = await tasks.wait_finished((await tasks.execute(t["id"])).json()["id"])
        assert done["status"] == "completed", done
        session = await SessionsApi(tasks.client, tasks.user).get(done["session_id"])
        assert session["template_id"] == template["id"] and session["system_prompt"] == "From the template"
        assert session["permission_mode"] == "bypassPermissions" and session["allowed_tools"] == ["Read"]
        assert "seeded" in done["result_data"]["result"]


class TestReportFailure:
    async def test_the_outcome_survives_a_failing_report(
        self, tasks: TasksApi, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("renderer exploded")

        monkeypatch.setattr(runner.report_service, "create_report", broken)
        t = await tasks.create(prompt_template="hello there")
        done = await tasks.wait_finished((await tasks.execute(t["id"])).json()["id"])
        assert done["status"] == "completed" and done["total_cost_usd"] > 0
        assert done["report_id"] is None and "renderer exploded" in done["result_data"]["report_error"]
