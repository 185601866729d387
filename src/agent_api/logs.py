"""Logging: one JSON object per line (with the request id when there is one) for machines, coloured text for a
person at a terminal; `auto` picks by whether stderr is a terminal."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["auto", "json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else was passed in `extra=` and belongs in the output.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ColourFormatter(logging.Formatter):
    """The text format with the level coloured, for a person at a terminal."""

    _COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        colour = self._COLOURS.get(record.levelname)
        if colour is None:
            return super().formatMessage(record)
        plain = record.levelname
        record.levelname = f"\x1b[{colour}m{plain}\x1b[0m"
        try:
            return super().formatMessage(record)
        finally:
            record.levelname = plain  # other handlers see the record unchanged


def is_interactive(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def make_formatter(fmt: LogFormat | str, stream: IO[str]) -> logging.Formatter:
    if fmt == "json" or (fmt == "auto" and not is_interactive(stream)):
        return JsonFormatter()
    if fmt == "auto":
        return ColourFormatter()
    return logging.Formatter(TEXT_FORMAT)


def quiet_third_parties() -> None:
    """What libraries say on every start that an operator can do nothing about: deprecation notices meant for our
    developers (who see them in the tests) and WeasyPrint's per-step progress lines. Warnings that remain go
    through logging, so they come out in the configured format. `-W` or PYTHONWARNINGS still win."""
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        # uvicorn's own deprecation class derives from UserWarning, so it needs naming by module.
        warnings.filterwarnings("ignore", message=r".*deprecated", module=r"uvicorn\.")
    logging.captureWarnings(True)
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    logging.getLogger("fontTools").setLevel(logging.WARNING)


def configure_logging(level: str = "INFO", fmt: LogFormat | str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt, sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own access log replaces uvicorn's, which would print query strings (and so `?token=`).
    logging.getLogger("uvicorn.access").disabled = True
    quiet_third_parties()


_SECRET_PARAMS = re.compile(r"(?i)\b(token|ticket|access_token|api_key|key)=[^&\s\"']+")


class RedactSecrets(logging.Filter):
    """Rewrites `token=...`-style query parameters out of a record before any handler sees it.

    Uvicorn's own lines (a WebSocket handshake, for instance) print the path with its query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAMS.sub(r"\1=***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_server_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
