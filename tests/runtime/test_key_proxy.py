"""The model-key relay: agents hold a throwaway token, the relay adds the operator's credential upstream."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent_api.runtime.agent import AgentSpec, RuntimeConfig
from agent_api.runtime.endpoint import start_endpoint
from agent_api.runtime.key_proxy import CredentialProxy
from agent_api.runtime.offline_model import OfflineModel
from agent_api.runtime.pool import AgentPool
from tests.runtime.test_pool import NullObserver


class RecordingUpstream:
    """A stand-in for the model API that answers with what it received."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

        async def echo(request: Request) -> JSONResponse:
            record = {
                "headers": dict(request.headers),
                "path": request.url.path,
                "query": str(request.url.query),
                "body": (await request.body()).decode(),
            }
            self.seen.append(record)
            return JSONResponse(record, status_code=201)

        self.app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[RecordingUpstream, str]]:
    recorder = RecordingUpstream()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recorder.app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield recorder, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


class TestRelay:
    async def test_a_wrong_token_never_reaches_upstream(self, upstream: tuple[RecordingUpstream, str]) -> None:
        recorder, url = upstream
        relay = CredentialProxy(url, api_key="sk-real")
        await relay.start()
        try:
            async with httpx.AsyncClient() as client:
                for headers in ({}, {"x-api-key": "guess"}, {"authorization": "Bearer guess"}):
                    r = await client.post(f"{relay.base_url}/v1/messages", headers=headers, content=b"{}")
                    assert r.status_code == 401
        finally:
            await relay.stop()
        assert recorder.seen == []

    @pytest.mark.parametrize("mode", ["api_key", "auth_token"])
    async def test_the_real_credential_replaces_the_token(
        self, upstream: tuple[RecordingUpstream, str], mode: str
    ) -> None:
        recorder, url = upstream
        relay = CredentialProxy(url, **{mode: "sk-real-credential"})
        await relay.start()
        try:
            presented = {"x-api-key": relay.token} if mode == "api_key" else {"authorization": f"Bearer {relay.token}"}
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    f"{relay.base_url}/v1/messages?beta=true",
                    headers={**presented, "anthropic-version": "2023-06-01"},
                    content=b'{"model": "m"}',
                )
        finally:
            await relay.stop()
        assert r.status_code == 201
        [seen] = recorder.seen
        assert seen["path"] == "/v1/messages" and seen["query"] == "beta=true" and seen["body"] == '{"model": "m"}'
        assert seen["headers"]["anthropic-version"] == "2023-06-01"
        if mode == "api_key":
            assert seen["headers"]["x-api-key"] == "sk-real-credential" and "authorization" not in seen["headers"]
        else:
            assert (
                seen["headers"]["authorization"] == "Bearer sk-real-credential" and "x-api-key" not in seen["headers"]
            )
        assert relay.token not in str(seen)


@pytest.mark.slow
async def test_an_agent_works_through_the_relay_and_never_sees_the_key(tmp_path: Path) -> None:
    real_key = "sk-ant-real-" + uuid.uuid4().hex
    async with OfflineModel() as model:  # the upstream, as the real API would be
        endpoint = await start_endpoint(
            1, environ={"ANTHROPIC_API_KEY": real_key, "ANTHROPIC_BASE_URL": model.base_url}
        )
        try:
            assert endpoint.kind == "anthropic" and endpoint.base_url == model.base_url
            assert all(real_key not in value for value in endpoint.env.values())
            pool = AgentPool(RuntimeConfig(env=endpoint.env, config_dir=tmp_path / "claude"))
            cwd = tmp_path / "work"
            cwd.mkdir()
            spec = AgentSpec(
                session_id=uuid.uuid4(), cwd=cwd, permission_mode="bypassPermissions", model="offline-echo-1"
            )
            try:
                result, _ = await pool.run_turn(spec, "run: env > seen.txt", NullObserver())
            finally:
                await pool.close_all()
            assert result is not None and not result.is_error
            seen = (cwd / "seen.txt").read_text()
            assert "ANTHROPIC_BASE_URL=http://127.0.0.1" in seen and real_key not in seen
        finally:
            await endpoint.stop()
