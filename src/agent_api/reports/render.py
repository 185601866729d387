"""Report rendering: HTML from a Jinja2 template, PDF from that HTML, and JSON.

Agent output is untrusted: the template escapes everything it inserts, and the PDF renderer may not fetch any
URL at all (no external host, no local file, no data: URI), so markup that slips into a report can neither
reach the network (SSRF) nor read a file on the server into the PDF.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sys
import threading
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

from agent_api.reports.schemas import ReportData

if TYPE_CHECKING:
    from jinja2 import Environment

log = logging.getLogger("agent_api.reports.render")


class FetchRefused(Exception):
    pass


class RefusingFetcher:
    """A WeasyPrint URL fetcher that refuses every URL, and remembers what it was asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused: list[str] = []

    def __call__(self, url: str, *args: object, **kwargs: object) -> NoReturn:
        with self._lock:
            self.refused.append(url)
        # WeasyPrint turns the error into a warning and renders the page without the resource.
        log.info("refused to fetch %.200s while rendering a report", url)
        raise FetchRefused(f"report rendering fetches no URLs ({url[:100]})")


def _datetime(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@functools.cache
def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined  # Jinja2 (~2 MiB): loaded by the first HTML report

    env = Environment(
        loader=PackageLoader("agent_api.reports", "templates"),
        autoescape=True,  # always, whatever the template's name: every value in a report may come from the agent
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(datetime=_datetime, duration=_duration, size=_size)
    return env


def to_html(data: ReportData) -> str:
    return _environment().get_template("report.html.j2").render(report=data)


def to_pdf(html: str, fetcher: RefusingFetcher | None = None) -> bytes:
    """Blocking and CPU-heavy: the server calls it in a child process (`to_pdf_bounded`)."""
    import weasyprint  # imported here: the API process renders no PDF itself and need not hold WeasyPrint

    # No base_url: relative references have nothing to resolve against, and the fetcher refuses the rest.
    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=fetcher or RefusingFetcher())
    pdf = document.write_pdf()
    assert pdf is not None  # only None when writing to a target
    return pdf


class RenderFailed(Exception):
    pass


# At most this many renderer processes at once per event loop; more downloads wait their turn.
_renderers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def to_pdf_bounded(html: str, *, timeout_s: float, memory_bytes: int) -> bytes:
    """The PDF, rendered in a child process (`pdf_child`) capped in memory and CPU and killed at `timeout_s`;
    `RenderFailed` when it does not finish within them."""
    async with _renderers.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(2)):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_api.reports.pdf_child",
            "--memory-bytes",
            str(memory_bytes),
            "--cpu-seconds",
            str(max(1, math.ceil(timeout_s))),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            pdf, errors = await asyncio.wait_for(child.communicate(html.encode()), timeout_s)
        except TimeoutError:
            raise RenderFailed(f"rendering the PDF took longer than {timeout_s:g} s") from None
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    if child.returncode != 0 or not pdf.startswith(b"%PDF"):
        last = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        log.warning("the PDF renderer failed (exit %s): %.300s", child.returncode, last[0])
        raise RenderFailed("the PDF renderer ran out of its memory or time")
    return pdf


def to_json(data: ReportData) -> bytes:
    return data.model_dump_json(indent=2).encode()
