"""The offline model: SSE framing and directives over HTTP, then the real SDK and CLI against it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    query,
)

from agent_api.runtime.offline_model import OFFLINE_MODEL_NAME, OfflineModel, cli_env, plan_reply

CLI_DEADLINE_S = 90  # a generous bound for one CLI turn; a hang fails the test instead of stalling the run


# ------------------------------------------------------------------------------------------------ helpers


def user(*content: Any) -> dict[str, Any]:
    only_text = len(content) == 1 and isinstance(content[0], str)
    return {"role": "user", "content": content[0] if only_text else list(content)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_id: str = "toolu_x") -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": name, "input": {}}]}


def tool_result(content: str, tool_id: str = "toolu_x") -> dict[str, Any]:
    return user({"type": "tool_result", "tool_use_id": tool_id, "content": content})


def body(*messages: dict[str, Any], stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": OFFLINE_MODEL_NAME, "max_tokens": 1024, "stream": stream, "messages": list(messages), **extra}


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.split("\n\n"):
        if frame.strip():
            fields = dict(line.split(": ", 1) for line in frame.splitlines())
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta" and "text" in d["delta"])


@pytest.fixture
async def server() -> AsyncIterator[OfflineModel]:
    async with OfflineModel() as model:
        yield model


@pytest.fixture
async def http(server: OfflineModel) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client


async def post_stream(http: httpx.AsyncClient, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    response = await http.post("/v1/messages", json=payload)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    return parse_sse(response.text)


# ------------------------------------------------------------------------------------ SSE and directives


async def test_echo_streams_anthropic_event_sequence(http: httpx.AsyncClient, server: OfflineModel) -> None:
    events = await post_stream(http, body(user("hello there, a prompt long enough for several deltas")))

    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"} and len(names[3:-3]) >= 2
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["model"] == OFFLINE_MODEL_NAME and start["role"] == "assistant" and start["content"] == []
    assert start["usage"]["input_tokens"] > 0 and start["usage"]["output_tokens"] > 0
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] > 0
    assert streamed_text(events) == "Echo: hello there, a prompt long enough for several deltas"
    assert server.request_count == 1


async def test_tool_use_streams_input_as_json_deltas(http: httpx.AsyncClient) -> None:
    events = await post_stream(http, body(user("run: ls -la")))

    start = next(d for n, d in events if n == "content_block_start")["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "Bash" and start["input"] == {}
    assert start["id"].startswith("toolu_")
    parts = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert len(parts) >= 2 and all(p["type"] == "input_json_delta" for p in parts)
    assert json.loads("".join(p["partial_json"] for p in parts)) == {"command": "ls -la", "description": "Run ls -la"}
    assert next(d for n, d in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


def test_directives_run_in_order_then_answer_with_last_result() -> None:
    env = {"role": "system", "content": "# Environment\n - Primary working directory: /work/dir\n"}
    reminder = "<system-reminder>\nrun: never\n</system-reminder>"
    prompt = user(text(reminder), text(f"write a.txt: hi there\n{reminder}\nrun: ls"))

    first = plan_reply(body(prompt, env)).blocks[0]
    assert first["name"] == "Write" and first["input"] == {"file_path": "/work/dir/a.txt", "content": "hi there"}
    second = plan_reply(body(prompt, env, tool_use("Write"), tool_result("File created"))).blocks[0]
    assert second["name"] == "Bash" and second["input"]["command"] == "ls"
    assert second["id"] != first["id"]
    final = plan_reply(body(prompt, env, tool_use("Write"), tool_result("ok"), tool_use("Bash"), tool_result("a.txt")))
    assert final.stop_reason == "end_turn" and final.blocks == [text("Done. a.txt")]


def test_read_and_paths_without_a_reported_cwd() -> None:
    reply = plan_reply(body(user("read /etc/hostname")))
    assert reply.blocks[0]["name"] == "Read" and reply.blocks[0]["input"] == {"file_path": "/etc/hostname"}
    # The cwd may also come from the system prompt; with none, a relative path goes through unchanged.
    in_system = plan_reply(body(user("read notes.md"), system=[text("Primary working directory: /srv/x")]))
    assert in_system.blocks[0]["input"]["file_path"] == "/srv/x/notes.md"
    assert plan_reply(body(user("read notes.md"))).blocks[0]["input"]["file_path"] == "notes.md"


def test_tool_directive_calls_any_tool_with_its_json_input() -> None:
    env = {"role": "system", "content": "Primary working directory: /work/dir"}
    prompt = user('tool Grep {"pattern": "x", "path": "../other"}\ntool Edit {"file_path": "a"}\ntool Glob {not json}')
    first = plan_reply(body(prompt, env)).blocks[0]
    # Passed as written: the path is not made absolute against the working directory.
    assert first["name"] == "Grep" and first["input"] == {"pattern": "x", "path": "../other"}
    second = plan_reply(body(prompt, env, tool_use("Grep"), tool_result("none"))).blocks[0]
    assert second["name"] == "Edit" and second["input"] == {"file_path": "a"}
    # A line whose JSON does not parse is plain text: after two calls the turn is done.
    final = plan_reply(body(prompt, env, tool_use("Grep"), tool_result("none"), tool_use("Edit"), tool_result("ok")))
    assert final.stop_reason == "end_turn" and final.blocks == [text("Done. ok")]


def test_new_prompt_after_an_interrupted_tool_is_not_mistaken_for_a_tool_answer() -> None:
    # After an interrupt the CLI merges the cancelled tool's result and a marker into the next prompt.
    merged = user(
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "interrupted", "is_error": True},
        text("[Request interrupted by user for tool use]"),
        text("what next?"),
    )
    reply = plan_reply(body(user("run: sleep 60"), tool_use("Bash"), merged))
    assert reply.blocks == [text("Echo: what next?")]


def test_recall_answers_with_the_first_prompt() -> None:
    conversation = [user("the first prompt"), {"role": "assistant", "content": "Echo"}, user("recall")]
    assert plan_reply(body(*conversation)).blocks == [text("Recall: the first prompt")]


def test_structured_output_side_request_gets_valid_json() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    payload = body(user("<session>\nfix the parser\n</session>"), output_config={"format": {"schema": schema}})
    assert json.loads(plan_reply(payload).blocks[0]["text"]) == {"title": "fix the parser"}


async def test_usage_is_deterministic_and_json_mode_matches(http: httpx.AsyncClient) -> None:
    conversation = body(user("same prompt"))
    first, second = await post_stream(http, conversation), await post_stream(http, conversation)
    usage = [(e[0][1]["message"]["usage"]["input_tokens"], e[-2][1]["usage"]["output_tokens"]) for e in (first, second)]
    assert usage[0] == usage[1] and min(usage[0]) > 0

    response = await http.post("/v1/messages", json={**conversation, "stream": False})
    message = response.json()
    assert response.status_code == 200 and message["type"] == "message"
    assert message["content"] == [text("Echo: same prompt")] and message["stop_reason"] == "end_turn"
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == usage[0]


async def test_side_endpoints_answer_sensibly(http: httpx.AsyncClient, server: OfflineModel) -> None:
    counted = await http.post("/v1/messages/count_tokens?beta=true", json=body(user("count me")))
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    probe = await http.head("/api/hello")
    assert probe.status_code == 200 and probe.content == b""
    models = await http.get("/v1/models")
    assert [m["id"] for m in models.json()["data"]] == [OFFLINE_MODEL_NAME]
    missing = await http.post("/v1/complete", json={})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    broken = await http.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["type"] == "error"
    for odd in ([1, 2], {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}):
        assert (await http.post("/v1/messages", json=odd)).json()["error"]["type"] == "invalid_request_error"
    assert server.request_count == 0  # only answered /v1/messages requests count


async def test_sleep_spreads_the_answer_over_time(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    events = await post_stream(http, body(user("sleep: 0.6")))
    elapsed = time.monotonic() - started

    assert elapsed >= 0.55
    assert sum(1 for name, _ in events if name == "content_block_delta") >= 3
    assert streamed_text(events) == "Slept for 0.6 seconds."


async def test_client_leaving_mid_stream_leaves_the_server_healthy(server: OfflineModel) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        async with client.stream("POST", "/v1/messages", json=body(user("sleep: 60"))) as response:
            async for line in response.aiter_lines():
                if "text_delta" in line:
                    break  # leaving the block closes the connection mid-answer, like an interrupt
        assert (await client.post("/v1/messages", json=body(user("still there?")))).status_code == 200
        async with client.stream("POST", "/v1/messages", json=body(user("sleep: 60"))) as response:
            async for line in response.aiter_lines():
                if "text_delta" in line:
                    break
            # stop() must not wait for the 60 s answer still being streamed on an open connection.
            async with asyncio.timeout(5):
                await server.stop()


def test_thread_mode_serves_sync_callers() -> None:
    model = OfflineModel()
    base_url = model.start_in_thread()
    try:
        assert base_url == model.base_url and base_url.startswith("http://127.0.0.1:")
        response = httpx.post(f"{base_url}/v1/messages", json=body(user("from a thread"), stream=False))
        assert response.json()["content"] == [text("Echo: from a thread")]
        assert model.request_count == 1
    finally:
        model.stop_thread()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/health")
    with OfflineModel() as again:
        assert httpx.get(f"{again.base_url}/health").json()["model"] == OFFLINE_MODEL_NAME


def test_cli_env_points_only_at_the_offline_model() -> None:
    env = cli_env("http://127.0.0.1:1234")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1234" and env["ANTHROPIC_API_KEY"]
    assert env["ANTHROPIC_MODEL"] == OFFLINE_MODEL_NAME
    for flag in ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER"):
        assert env[flag] == "1"
    assert env["DISABLE_ERROR_REPORTING"] == "1" and int(env["CLAUDE_CODE_MAX_RETRIES"]) <= 2


# ------------------------------------------------------------------------------- the real SDK and CLI


async def collect(messages: AsyncIterable[Any]) -> list[Any]:
    async with asyncio.timeout(CLI_DEADLINE_S):
        return [m async for m in messages]


def blocks(messages: list[Any], kind: type) -> list[Any]:
    found: list[Any] = []
    for message in messages:
        if isinstance(message, AssistantMessage | UserMessage) and isinstance(message.content, list):
            found.extend(b for b in message.content if isinstance(b, kind))
    return found


def result_of(messages: list[Any]) -> ResultMessage:
    assert isinstance(messages[-1], ResultMessage), messages[-1]
    return messages[-1]


@pytest.mark.slow
async def test_query_writes_a_file_and_runs_a_command(
    sdk_options: Callable[..., ClaudeAgentOptions], tmp_path: Path, offline_model: OfflineModel
) -> None:
    before = offline_model.request_count
    messages = await collect(query(prompt="write hello.txt: hi there\nrun: ls", options=sdk_options()))

    assert (tmp_path / "hello.txt").read_text() == "hi there"
    uses = blocks(messages, ToolUseBlock)
    assert [u.name for u in uses] == ["Write", "Bash"]
    assert uses[0].input == {"file_path": str(tmp_path / "hello.txt"), "content": "hi there"}
    results = {r.tool_use_id: r for r in blocks(messages, ToolResultBlock)}
    assert set(results) == {u.id for u in uses}
    assert not results[uses[1].id].is_error and "hello.txt" in str(results[uses[1].id].content)
    result = result_of(messages)
    assert not result.is_error and result.num_turns == 3 and result.result == "Done. hello.txt"
    assert result.total_cost_usd is not None and result.total_cost_usd > 0
    assert result.usage is not None and result.usage["input_tokens"] > 0 and result.usage["output_tokens"] > 0
    assert result.model_usage is not None and OFFLINE_MODEL_NAME in result.model_usage
    assert offline_model.request_count - before == 3


@pytest.mark.slow
async def test_client_keeps_the_process_for_follow_up_turns(sdk_options: Callable[..., ClaudeAgentOptions]) -> None:
    started = time.monotonic()
    async with asyncio.timeout(CLI_DEADLINE_S), ClaudeSDKClient(sdk_options()) as client:
        connected = time.monotonic()
        answers = []
        for prompt in ("first words", "second words", "recall"):
            await client.query(prompt)
            messages = [m async for m in client.receive_response()]
            answers.append(result_of(messages))
            if len(answers) == 1:
                first_turn = time.monotonic()
                init = next(m for m in messages if isinstance(m, SystemMessage) and m.subtype == "init")
                assert init.data["model"] == OFFLINE_MODEL_NAME
        follow_ups = time.monotonic()

    assert [a.result for a in answers] == ["Echo: first words", "Echo: second words", "Recall: first words"]
    assert len({a.session_id for a in answers}) == 1
    print(  # the numbers the runtime design leans on; visible with -s
        f"\nCLI start {connected - started:.2f}s, first turn {first_turn - connected:.2f}s, "
        f"two follow-up turns {follow_ups - first_turn:.2f}s"
    )
    assert follow_ups - first_turn < connected - started + (first_turn - connected) * 2


@pytest.mark.slow
async def test_resume_carries_the_conversation_into_a_new_process(
    sdk_options: Callable[..., ClaudeAgentOptions],
) -> None:
    first = result_of(await collect(query(prompt="remember the blue door", options=sdk_options())))

    resumed = result_of(await collect(query(prompt="recall", options=sdk_options(resume=first.session_id))))

    assert resumed.result == "Recall: remember the blue door"
    assert resumed.session_id == first.session_id
    fresh = result_of(await collect(query(prompt="recall", options=sdk_options())))
    assert fresh.result == "Recall: recall"


@pytest.mark.slow
async def test_interrupt_stops_a_long_turn(sdk_options: Callable[..., ClaudeAgentOptions]) -> None:
    async with asyncio.timeout(CLI_DEADLINE_S), ClaudeSDKClient(sdk_options(include_partial_messages=True)) as client:
        await client.query("sleep: 60")
        started = None
        messages = []
        async for message in client.receive_messages():
            messages.append(message)
            is_delta = isinstance(message, StreamEvent) and message.event.get("type") == "content_block_delta"
            if is_delta and started is None:
                started = time.monotonic()
                await client.interrupt()
            if isinstance(message, ResultMessage):
                break
        result = result_of(messages)
        assert started is not None and time.monotonic() - started < 30
        assert result.is_error and result.subtype == "error_during_execution"

        await client.query("after the interrupt")
        after = result_of([m async for m in client.receive_response()])
    assert after.result == "Echo: after the interrupt" and not after.is_error
