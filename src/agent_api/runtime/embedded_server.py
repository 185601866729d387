"""A uvicorn server run inside the application's own event loop (the model-key relay, the MCP relay).

Two things uvicorn does for a server of its own must not happen to one embedded in ours: `Server.serve` takes over
SIGINT and SIGTERM while it runs (a SIGTERM would then stop the embedded server, not the main one), and `Config`
sets the level of uvicorn's loggers (a `warning` there silenced the main server's own shut-down lines). The
application stops these servers itself, from its own shut-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """Serves `app` on a free loopback port from `start()` until `stop()`."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(
            uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, log_level=None, **options)
        )
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._socket is not None

    @property
    def base_url(self) -> str:
        assert self._socket is not None, "start() first"
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self, name: str) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._task = asyncio.create_task(self.serve(sockets=[self._socket]), name=name)
        while not self.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.should_exit = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 10)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
