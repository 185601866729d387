"""`AGENT_API_LOG_FORMAT`: `auto` is coloured text on a terminal and JSON lines otherwise; a normal start prints no
third-party deprecation notices or WeasyPrint progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_api.config import Settings
from tests.reliability.server import Service

SCRIPT = """
import logging, warnings
from agent_api.logs import configure_logging
configure_logging("INFO", {fmt!r})
logging.getLogger("agent_api.demo").warning("hello %s", "there", extra={{"request_id": "r1"}})
warnings.warn("old api", DeprecationWarning)
logging.getLogger("weasyprint.progress").info("Step 1 - Fetching and parsing HTML")
"""


def run_logging(fmt: str, *, tty: bool) -> str:
    """stderr of a fresh interpreter that configures logging and logs a line, on a pseudo-terminal or a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PYTHONWARNINGS")}
    env["TERM"] = "xterm"
    code = SCRIPT.format(fmt=fmt)
    if not tty:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code], stderr=follower, env=env, timeout=60, check=True)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the writing side is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert done.returncode == 0
        return b"".join(chunks).decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


class TestFormats:
    def test_auto_is_the_default(self) -> None:
        assert Settings().log_format == "auto"

    def test_auto_on_a_terminal_is_coloured_text(self) -> None:
        out = run_logging("auto", tty=True)
        assert "\x1b[33mWARNING\x1b[0m agent_api.demo hello there" in out, repr(out)
        assert not out.lstrip().startswith("{")

    def test_auto_elsewhere_is_json(self) -> None:
        lines = run_logging("auto", tty=False).splitlines()
        assert len(lines) == 1, lines  # the deprecation notice and the progress line are not printed
        entry = json.loads(lines[0])
        assert (entry["level"], entry["logger"], entry["msg"], entry["request_id"]) == (
            "warning",
            "agent_api.demo",
            "hello there",
            "r1",
        )

    def test_json_on_a_terminal_stays_json(self) -> None:
        out = run_logging("json", tty=True)
        assert json.loads(out.strip().splitlines()[0])["msg"] == "hello there"

    def test_text_stays_plain(self) -> None:
        out = run_logging("text", tty=True)
        assert "WARNING agent_api.demo hello there" in out and "\x1b[" not in out


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    try:
        svc.start()
        yield svc
    finally:
        svc.close()


@pytest.mark.slow
class TestServe:
    def test_a_normal_start_prints_json_lines_only(self, service: Service) -> None:
        service.login()
        code = service.terminate(30)
        assert code in (0, -15)
        assert service.server is not None
        stderr = service.server.stderr_path.read_text()
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines, service.output()
        for line in lines:
            entry = json.loads(line)  # a stray warning or progress line is not JSON
            assert "deprecat" not in entry["msg"].lower(), line
            assert not entry["logger"].startswith("weasyprint"), line
