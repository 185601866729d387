"""Response headers that keep what the server hands a browser inert: the console's policy, the report frame's,
and attachments' names.

The console's router imports `CONSOLE_CSP` / `console_headers()`; the report and file routes use the rest.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# Console pages: only this origin's own scripts, styles and connections; no inline script, no plugins, no framing.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# An HTML report, shown in a sandboxed frame of the console: no script at all (the sandbox without allow-scripts
# also gives it an opaque origin), its own inline styles and data: images only, framed by this origin alone.
REPORT_FRAME_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

# A file of a session's working directory, should a browser open it directly: never a document that runs anything.
FILE_CONTENT_CSP = "sandbox; default-src 'none'"

NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def console_headers() -> dict[str, str]:
    """The headers of every console page and static file."""
    return {
        "Content-Security-Policy": CONSOLE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def report_frame_headers() -> dict[str, str]:
    """The headers of an HTML report download, so it renders script-free inside the console's sandboxed frame."""
    return {"Content-Security-Policy": REPORT_FRAME_CSP, **NOSNIFF}


_UNSAFE_IN_QUOTES = re.compile(r'[^\x20-\x7e]|["\\]')


def attachment(filename: str) -> str:
    """A `Content-Disposition: attachment` value for any name (RFC 6266): an ASCII fallback in quotes, and the
    exact name as `filename*` when it differs. Quotes, backslashes and control characters never reach the header."""
    fallback = _UNSAFE_IN_QUOTES.sub("_", filename) or "download"
    value = f'attachment; filename="{fallback}"'
    if filename and fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='', errors='replace')}"
    return value
