"""A report of a real turn: the SDK and CLI against the offline model, downloaded in all three formats."""

from __future__ import annotations

import io

import httpx
import pytest
from pypdf import PdfReader

from tests.conftest import SessionsApi
from tests.reports.conftest import ReportsApi, validate_report_json

pytestmark = pytest.mark.slow

PRINTED = "<script>alert(1)</script>"


class TestReportOfARealTurn:
    async def test_session_report_in_html_pdf_and_json(
        self, client: httpx.AsyncClient, sessions: SessionsApi, reports: ReportsApi
    ) -> None:
        s = await sessions.create(name="Report e2e", permission_mode="bypassPermissions")
        prompt = f"write page.html: <b>bold</b>\nrun: echo '{PRINTED}'"
        r = await sessions.query(s["id"], prompt)
        assert r.status_code == 200, r.text
        turn = r.json()
        assert turn["turn_status"] == "completed" and PRINTED in turn["result"]

        made = await reports.create(s["id"])
        assert made["status"] == "completed" and made["model"] == "offline-echo-1"
        assert made["total_cost_usd"] == pytest.approx(turn["cost_usd"]) and made["total_input_tokens"] > 0
        data = made["data"]
        assert data["prompt"] == prompt and data["final_answer"] == turn["result"]
        tools = [e for e in data["timeline"]["entries"] if e["type"] == "tool_call"]
        assert [t["name"] for t in tools] == ["Write", "Bash"]
        assert all(t["status"] == "completed" for t in tools) and PRINTED in (tools[1]["output"] or "")
        assert [(f["path"], f["size_bytes"], f["changed"]) for f in data["files"]["items"]] == [
            ("page.html", len("<b>bold</b>"), True)
        ]

        html = await reports.download(made["id"], "html")
        assert html.status_code == 200 and html.headers["content-type"] == "text/html; charset=utf-8"
        assert PRINTED not in html.text and "<b>bold</b>" not in html.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.text

        pdf = await reports.download(made["id"], "pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert f'filename="report-{made["id"]}.pdf"' in pdf.headers["content-disposition"]
        reader = PdfReader(io.BytesIO(pdf.content))
        text = " ".join(page.extract_text() for page in reader.pages)
        assert len(reader.pages) >= 1 and "Report e2e" in text and PRINTED in text

        as_json = await reports.download(made["id"], "json")
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        validate_report_json(as_json.json())
        assert as_json.json() == data
