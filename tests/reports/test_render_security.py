"""The PDF renderer fetches nothing: no external host (SSRF), no local file, not even a data: URI.

Each test runs a local HTTP server that records every request. A control test renders the same markup with
WeasyPrint's own fetcher and shows it does reach the server and embed /etc/passwd, so the refusals are real.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import weasyprint
from pypdf import PdfReader

from agent_api.reports import render
from agent_api.reports.schemas import (
    ReportData,
    ReportSource,
    SessionSnapshot,
    Timeline,
    TimelineMessage,
    TimelineToolCall,
    Usage,
    WorkdirFiles,
)

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b"body { color: red }" if self.path.endswith(".css") else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/css" if self.path.endswith(".css") else "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.hits: list[str] = []
        handler = type("Handler", (_Recorder,), {"hits": self.hits})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def hostile_markup(self) -> str:
        return f"""<!DOCTYPE html><html><head>
<link rel="stylesheet" href="{self.base}/link.css">
<link rel="attachment" href="file:///etc/passwd">
<style>
  @import url("{self.base}/import.css");
  @font-face {{ font-family: Remote; src: url({self.base}/font.woff); }}
  body {{ background: url({self.base}/background.png); font-family: Remote; }}
</style></head><body>
<p>Visible text</p>
<img src="file:///etc/passwd">
<img src="{self.base}/image.png">
<img src="data:image/png;base64,{PNG_1PX}">
<a rel="attachment" href="file:///etc/passwd">passwd</a>
<object data="{self.base}/object.svg"></object>
</body></html>"""


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def _attachments(pdf: bytes) -> dict[str, list[bytes]]:
    return dict(PdfReader(io.BytesIO(pdf)).attachments)


class TestControl:
    def test_weasyprints_own_fetcher_would_reach_the_server_and_read_the_file(self, server: Server) -> None:
        pdf = weasyprint.HTML(string=server.hostile_markup()).write_pdf()
        assert pdf is not None
        assert {"/link.css", "/import.css", "/image.png"} <= set(server.hits)
        embedded = b"".join(b"".join(parts) for parts in _attachments(pdf).values())
        assert b"root:" in embedded  # /etc/passwd ended up inside the PDF


class TestRefusingFetcher:
    def test_raw_markup_fetches_nothing(self, server: Server, caplog: pytest.LogCaptureFixture) -> None:
        fetcher = render.RefusingFetcher()
        with caplog.at_level(logging.INFO, logger="agent_api.reports.render"):
            pdf = render.to_pdf(server.hostile_markup(), fetcher)
        assert server.hits == []
        assert "file:///etc/passwd" in fetcher.refused
        expected = {f"{server.base}/{name}" for name in ("link.css", "import.css", "image.png", "background.png")}
        assert expected <= set(fetcher.refused)
        assert any(url.startswith("data:") for url in fetcher.refused)
        assert _attachments(pdf) == {}
        assert "Visible text" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
        assert any("refused to fetch file:///etc/passwd" in r.getMessage() for r in caplog.records)

    def test_the_fetcher_refuses_when_called_directly(self) -> None:
        fetcher = render.RefusingFetcher()
        for url in ("http://169.254.169.254/latest/meta-data/", "file:///etc/shadow", "data:text/plain,hi"):
            with pytest.raises(render.FetchRefused):
                fetcher(url)
        assert len(fetcher.refused) == 3


def _report_with(text: str) -> ReportData:
    now = datetime.now(UTC)
    sid = uuid.uuid4()
    return ReportData(
        report_id=uuid.uuid4(),
        title=text,
        generated_at=now,
        status="completed",
        source=ReportSource(kind="session", session_id=sid, task_id=None, task_execution_id=None),
        session=SessionSnapshot(
            id=sid, name=text, status="active", model="m", created_at=now, started_at=None, completed_at=None
        ),
        model="m",
        prompt=text,
        final_answer=text,
        duration_ms=5,
        usage=Usage(
            total_cost_usd=0,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            cache_creation_tokens=0,
            turns=1,
            messages=1,
            tool_calls=1,
        ),
        errors=[text],
        timeline=Timeline(
            entries=[
                TimelineMessage(at=now, role="assistant", text=text, truncated=False),
                TimelineToolCall(
                    at=now,
                    finished_at=now,
                    name=text,
                    tool_use_id="t1",
                    status="completed",
                    is_error=False,
                    duration_ms=1,
                    input=text,
                    output=text,
                    truncated=False,
                ),
            ],
            total=2,
            omitted=0,
        ),
        files=WorkdirFiles(available=True, items=[], total_count=0, total_bytes=0, truncated=False),
    )


class TestAgentOutputInAReport:
    def test_hostile_agent_text_is_escaped_so_nothing_is_even_asked_for(self, server: Server) -> None:
        data = _report_with(server.hostile_markup())
        html = render.to_html(data)
        for markup in ("<img", '<link rel="attachment"', "<a rel", "<object", "<style>\n  @import"):
            assert markup not in html
        assert "&lt;img src=&#34;file:///etc/passwd&#34;&gt;" in html
        fetcher = render.RefusingFetcher()
        pdf = render.to_pdf(html, fetcher)
        assert fetcher.refused == [] and server.hits == []
        assert pdf.startswith(b"%PDF") and _attachments(pdf) == {}
        assert "file:///etc/passwd" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()  # shown as text
