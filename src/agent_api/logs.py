"""Structured logging: one JSON object per line, with the request id when there is one."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

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


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own access log replaces uvicorn's, which would print query strings (and so `?token=`).
    logging.getLogger("uvicorn.access").disabled = True


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
