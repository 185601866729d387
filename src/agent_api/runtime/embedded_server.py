"""A uvicorn server run inside the application's own event loop (the model-key relay, the MCP relay).

Two things uvicorn does for a server of its own must not happen to one embedded in ours: `Server.serve` takes over
SIGINT and SIGTERM while it runs (a SIGTERM would then stop the embedded server, not the main one), and `Config`
sets the level of uvicorn's loggers (a `warning` there silenced the main server's own shut-down lines). The
application stops these servers itself, from its own shut-down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(
            uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, log_level=None, **options)
        )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
