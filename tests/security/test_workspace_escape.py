"""Workspace and host escape: real agents (the real SDK and CLI against the offline model) try to read or write
outside their own session's working directory, by every route the service offers.

The targets: another user's session directory, the server's data dir (its database file and its JWT secret file),
and the agent CLI's shared state directory (other sessions' transcripts). Each holds a unique marker. The routes:
the file tools (Read, Write, Edit, Glob, Grep) with absolute paths, `..` and links planted in the workspace; Bash in
the sandbox, with and without `dangerouslyDisableSandbox`; fork, archive and restore, the file and download
endpoints, reports; and an MCP stdio server that reads whatever path it is given. Every attempt is paired with the
same mechanism working inside the workspace, so no test passes because a tool never ran. Afterwards no marker byte
may appear in any API answer, stored row, download, archive, or request the model received.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api import migrate
from agent_api.app import create_app
from agent_api.runtime import cli_state, confine
from agent_api.runtime.agent import LiveAgent
from agent_api.runtime.endpoint import sandbox_available
from agent_api.sessions import service
from tests.conftest import SessionsApi, Users, app_state, make_client, make_settings, tar_members

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sandbox_available(), reason="bubblewrap and socat are not installed (CI installs them)"),
    # The `search_tools` fixture hands the CLI an allow rule on purpose; the hook still sees every call.
    pytest.mark.filterwarnings("ignore:can_use_tool will not be invoked"),
]

FILE_READER = Path(__file__).parent / "servers" / "file_reader.py"


@dataclass
class World:
    """One server as deployed (SQLite database and generated JWT secret in the data dir), a victim with a file,
    and every request the offline model received."""

    app: Any
    client: httpx.AsyncClient
    users: Users
    data_dir: Path
    victim: SessionsApi
    victim_id: str
    victim_dir: Path
    victim_file: Path
    transcript: Path
    legacy_transcript: Path
    markers: dict[str, str]
    model_requests: list[bytes] = field(default_factory=list)

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "secret_key"

    @property
    def database(self) -> Path:
        return self.data_dir / "agent-api.db"

    def workdir(self, session_id: str) -> Path:
        return service.workdir_of(app_state(self.app), uuid.UUID(session_id))

    def snapshot(self) -> dict[str, bytes]:
        """What the targets hold now, to prove nothing was written to them."""
        found = {str(p): p.read_bytes() for p in sorted(self.victim_dir.rglob("*")) if p.is_file()}
        for path in (self.secret_file, self.transcript, self.legacy_transcript):
            found[str(path)] = path.read_bytes()
        return found


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    data_dir = tmp_path_factory.mktemp("deployed")
    markers = {name: f"{name}-MARKER-{uuid.uuid4().hex}" for name in ("VICTIM", "JWTKEY", "DATABASE", "TRANSCRIPT")}
    # The JWT secret the server generates on first start, placed beforehand so its value is a known marker.
    secret = data_dir / "secret_key"
    secret.write_text(markers["JWTKEY"])
    secret.chmod(0o600)
    url = f"sqlite+aiosqlite:///{data_dir / 'agent-api.db'}"
    migrate.upgrade(url)
    application = create_app(make_settings(data_dir, url, secret_key=None))
    async with application.router.lifespan_context(application):
        state = app_state(application)
        offline = state.endpoint.offline if state.endpoint is not None else None
        assert offline is not None, "the suite runs against the offline model"
        seen: list[bytes] = []
        route = offline._route

        def recording(method: str, path: str, raw: bytes) -> Any:
            seen.append(raw)
            return route(method, path, raw)

        offline._route = recording  # type: ignore[method-assign]
        async with make_client(application) as client:
            users = Users(application, client)
            victim = SessionsApi(client, await users.create())
            # The database marker lives only in the victim's row; the victim never runs a turn, so no marker ever
            # has a lawful reason to reach the model.
            s = await victim.create(name="victim", description=markers["DATABASE"])
            victim_dir = service.workdir_of(state, uuid.UUID(s["id"]))
            victim_file = victim_dir / "private.txt"
            victim_file.write_text(markers["VICTIM"] + "\n")
            (victim_dir / "notes").mkdir()
            (victim_dir / "notes" / "deep.txt").write_text(markers["VICTIM"] + " deep\n")
            # A conversation of the victim's in its CLI state directory, where the CLI keeps transcripts, and one
            # in the shared root where every session's were kept before each session had a directory of its own.
            root = state.settings.data_dir / "claude"
            transcript = (
                cli_state.state_dir(root, uuid.UUID(s["id"])) / "projects" / "-victim" / f"{uuid.uuid4()}.jsonl"
            )
            legacy = root / "projects" / "-victim-before" / f"{uuid.uuid4()}.jsonl"
            for path in (transcript, legacy):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"type": "user", "message": markers["TRANSCRIPT"]}) + "\n")
            yield World(
                application,
                client,
                users,
                state.settings.data_dir.resolve(),
                victim,
                s["id"],
                victim_dir,
                victim_file,
                transcript,
                legacy,
                markers,
                seen,
            )
        offline._route = route  # type: ignore[method-assign]


@pytest.fixture
async def attacker(world: World) -> SessionsApi:
    return SessionsApi(world.client, await world.users.create())


@pytest.fixture
def search_tools(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Session settings under which the CLI offers Glob and Grep (see `test_glob_and_grep_...`)."""
    original = LiveAgent._options

    def with_search_tools(agent: LiveAgent) -> Any:
        options = original(agent)
        if "Glob" in agent.spec.allowed_tools:
            options.allowed_tools = ["Glob", "Grep"]
        return options

    monkeypatch.setattr(LiveAgent, "_options", with_search_tools)
    # A system prompt of its own: a fresh agent process, not a spare started before the patch.
    return {"allowed_tools": ["Glob", "Grep"], "system_prompt": "search"}


@dataclass
class Attack:
    """An attacker's session with a file of its own holding a control marker."""

    api: SessionsApi
    id: str
    cwd: Path
    own: str

    async def turn(self, *directives: str) -> dict[str, Any]:
        r = await self.api.query(self.id, "\n".join(directives))
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["turn_status"] == "completed", done
        return done  # type: ignore[no-any-return]

    async def decisions(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        return [
            (p["tool_name"], p["decision"], p["decided_by"], p["input_summary"])
            for p in await self.api.items(self.id, "permissions")
        ]

    async def outputs(self) -> dict[str, str]:
        """Each tool call's output by its main input, for the controls."""
        found: dict[str, str] = {}
        for call in await self.api.items(self.id, "tool-calls"):
            given = call["input"]
            key = given.get("file_path") or given.get("command") or given.get("pattern") or json.dumps(given)
            if given.get("path"):
                key += f" @{given['path']}"
            found[f"{call['name']} {key}"] = json.dumps(call["output"])
        return found


async def new_attack(world: World, api: SessionsApi, **settings: Any) -> Attack:
    s = await api.create(permission_mode=settings.pop("permission_mode", "bypassPermissions"), **settings)
    cwd = world.workdir(s["id"])
    own = f"OWN-{uuid.uuid4().hex}"
    (cwd / "own.txt").write_text(own + "\n")
    return Attack(api, s["id"], cwd, own)


def _db_dump(world: World) -> str:
    with sqlite3.connect(world.database) as db:
        return "\n".join(db.iterdump())


async def _everything(world: World, api: SessionsApi, session_ids: list[str], *extra: str | bytes) -> str:
    """Every place something an agent read could surface: the API's answers about its sessions (history, tool
    calls, decisions, hooks, the download), the database as stored, and every request the model received."""
    parts: list[str] = [e.decode("utf-8", "replace") if isinstance(e, bytes) else e for e in extra]
    for sid in session_ids:
        parts.append(json.dumps(await api.get(sid)))
        for what in ("messages", "tool-calls", "permissions", "hooks"):
            parts.append(json.dumps(await api.items(sid, what)))
        download = await world.client.get(f"/api/v1/sessions/{sid}/workdir/download", headers=api.user.headers)
        if download.status_code == 200:
            parts.append(repr(tar_members(download.content)))
    dump = _db_dump(world)
    # The database marker is in the victim's own row, where it belongs; nowhere else.
    assert dump.count(world.markers["DATABASE"]) == 1, "the database marker was copied into another row"
    parts.append(dump.replace(world.markers["DATABASE"], "<victim's description>"))
    parts.append(b"\n".join(world.model_requests).decode("utf-8", "replace"))
    return "\n".join(parts)


def assert_no_marker(world: World, said: str) -> None:
    for name, marker in world.markers.items():
        assert marker not in said, f"the {name} marker leaked"
        # Also no recognisable piece of it (a partial read, an encoded copy would still show its random part).
        assert marker.split("-")[-1][:16] not in said, f"part of the {name} marker leaked"


def _denied(decisions: list[tuple[str, str, str, dict[str, Any]]], tool: str, key: str, value: str) -> bool:
    """Whether the path guard refused the call (the CLI hands `..` paths over normalised)."""
    wanted = {value, os.path.normpath(value)}
    return any(
        t == tool and d == "deny" and by == "path_guard" and given.get(key) in wanted for t, d, by, given in decisions
    )


class TestFileTools:
    async def test_read_write_edit_by_absolute_and_dotdot_paths_are_refused(
        self, world: World, attacker: SessionsApi
    ) -> None:
        a = await new_attack(world, attacker)
        before = world.snapshot()
        v = world.victim_file
        rel_victim = f"../{world.victim_id}/private.txt"
        edits = {"old_string": "MARKER", "new_string": "EDITED"}
        own = str(a.cwd / "own.txt")
        done = await a.turn(
            f"read {v}",
            f"read {world.secret_file}",
            f"read {world.database}",
            f"read {world.transcript}",
            f"read {world.legacy_transcript}",
            f"read {rel_victim}",
            "read ../../secret_key",
            f"read /proc/{os.getpid()}/root{world.secret_file}",
            f"write {world.victim_dir}/planted.txt: PLANTED",
            f"write ../{world.victim_id}/planted2.txt: PLANTED",
            f"write {world.secret_file}: OVERWRITTEN",
            f"tool Edit {json.dumps({'file_path': str(v), **edits})}",
            f"tool Edit {json.dumps({'file_path': f'{a.cwd}/{rel_victim}', **edits})}",
            # The controls: the same tools inside the workspace.
            "read own.txt",
            f"tool Edit {json.dumps({'file_path': own, 'old_string': a.own, 'new_string': a.own + '-EDITED'})}",
            "write mine.txt: MINE",
        )

        decisions = await a.decisions()
        out = await a.outputs()
        for p in [str(v), str(world.secret_file), str(world.transcript), str(world.legacy_transcript)]:
            assert _denied(decisions, "Read", "file_path", p), (p, decisions)
        for p in [f"{a.cwd}/{rel_victim}"]:
            assert _denied(decisions, "Read", "file_path", p), (p, decisions)
        assert _denied(decisions, "Read", "file_path", f"{a.cwd}/../../secret_key")
        assert _denied(decisions, "Read", "file_path", f"/proc/{os.getpid()}/root{world.secret_file}")
        # The CLI refuses a .db file as binary before anything else is asked.
        assert "cannot read binary files" in out[f"Read {world.database}"]
        for p in [f"{world.victim_dir}/planted.txt", f"{a.cwd}/../{world.victim_id}/planted2.txt"]:
            assert _denied(decisions, "Write", "file_path", p), (p, decisions)
        assert _denied(decisions, "Write", "file_path", str(world.secret_file))
        # Edit first checks that the file exists, in the CLI's confined world, where the victim's file does not.
        for p in [str(v), f"{a.cwd}/{rel_victim}"]:
            assert _denied(decisions, "Edit", "file_path", p) or "File does not exist" in out[f"Edit {p}"], out
        assert world.snapshot() == before

        allowed = [(t, given.get("file_path")) for t, dec, _, given in decisions if dec == "allow"]
        assert allowed == [("Read", own), ("Edit", own), ("Write", str(a.cwd / "mine.txt"))]
        assert a.own in out[f"Read {own}"]
        assert (a.cwd / "own.txt").read_text().strip() == a.own + "-EDITED"
        assert (a.cwd / "mine.txt").read_text() == "MINE"
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))

    async def test_glob_and_grep_out_of_the_workspace_are_refused(
        self, world: World, attacker: SessionsApi, search_tools: dict[str, Any]
    ) -> None:
        """This CLI offers Glob and Grep only when its own `--allowedTools` names them, and the server settles rules
        in its hook instead, so agents do not have them. Handed to the CLI here (as another CLI version might offer
        them by default), they run, and the hook still refuses every path out of the workspace."""
        a = await new_attack(world, attacker, **search_tools)
        d, vdir = world.data_dir, world.victim_dir

        def grep(path: str, pattern: str = "MARKER") -> str:
            return f"tool Grep {json.dumps({'pattern': pattern, 'path': path, 'output_mode': 'content'})}"

        done = await a.turn(
            f"tool Glob {json.dumps({'pattern': '**/*', 'path': str(vdir)})}",
            f"tool Glob {json.dumps({'pattern': f'{d}/**/*'})}",
            f"tool Glob {json.dumps({'pattern': '../**/private.txt'})}",
            f"tool Glob {json.dumps({'pattern': '*', 'path': f'../{world.victim_id}'})}",
            grep(str(d)),
            grep(".."),
            grep(str(world.victim_file)),
            grep(str(world.transcript.parent)),
            # The controls.
            f"tool Glob {json.dumps({'pattern': '*.txt'})}",
            grep(".", "OWN-"),
        )
        decisions = await a.decisions()
        for key, value in [("path", str(vdir)), ("pattern", f"{d}/**/*"), ("pattern", "../**/private.txt")]:
            assert _denied(decisions, "Glob", key, value), (key, value, decisions)
        assert _denied(decisions, "Glob", "path", f"../{world.victim_id}") or _denied(
            decisions, "Glob", "path", str(vdir)
        )
        for path in [str(d), "..", str(world.victim_file), str(world.transcript.parent)]:
            assert _denied(decisions, "Grep", "path", path) or _denied(
                decisions, "Grep", "path", os.path.normpath(a.cwd / path)
            ), (path, decisions)
        allowed = [t for t, dec, _, _ in decisions if dec == "allow"]
        assert allowed == ["Glob", "Grep"]
        out = await a.outputs()
        assert "own.txt" in out["Glob *.txt"] and a.own in out["Grep OWN- @."]
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))


def _plant_links(world: World, cwd: Path) -> dict[str, Path]:
    """Symbolic links in the workspace to every target, made on disk (as a restored or forked directory could hold
    them); the agent makes its own with Bash as well."""
    links = {
        "lv": world.victim_file,
        "ld": world.victim_dir,
        "lk": world.secret_file,
        "lwd": world.data_dir,
        "lcfg": world.data_dir / "claude",
        "ltr": world.transcript,
    }
    for name, target in links.items():
        (cwd / name).symlink_to(target)
    return links


class TestLinks:
    async def test_symlinks_and_hard_links_to_outside_files_are_not_followed(
        self, world: World, attacker: SessionsApi, search_tools: dict[str, Any]
    ) -> None:
        a = await new_attack(world, attacker, **search_tools)
        links = _plant_links(world, a.cwd)
        before = world.snapshot()
        rel_transcript = world.transcript.relative_to(world.data_dir / "claude")
        through = {"ld/private.txt", "lwd/secret_key", f"lcfg/{rel_transcript}", "bd/private.txt"}
        made_by_bash = (
            f"run: ln -s {world.victim_file} bv; ln -s {world.victim_dir} bd; ln -s {world.secret_file} bk; "
            f"ln {world.victim_file} hv; ln {world.secret_file} hk; ln {world.transcript} ht; "
            "ln own.txt own-hard.txt; ls -l"
        )
        reads = [*links, "bv", "bk", *sorted(through), "hv", "hk", "ht"]
        done = await a.turn(
            made_by_bash,
            *(f"read {name}" for name in reads),
            "write lv: OVERWRITTEN",
            "write ld/planted.txt: PLANTED",
            f"run: cat {' '.join(reads)}",
            f"tool Grep {json.dumps({'pattern': 'MARKER', 'path': '.', 'output_mode': 'content'})}",
            f"tool Grep {json.dumps({'pattern': 'MARKER', 'path': 'lcfg', 'output_mode': 'content'})}",
            f"tool Glob {json.dumps({'pattern': '**/*.jsonl'})}",
            f"tool Glob {json.dumps({'pattern': '**/*', 'path': 'ld'})}",
            # The controls: a hard link inside the workspace, and the tools on the workspace itself.
            "read own-hard.txt",
            "run: cat own-hard.txt",
            f"tool Grep {json.dumps({'pattern': 'OWN-', 'path': '.', 'output_mode': 'content'})}",
        )
        # Bash made its symbolic links (a link is only a name), but no hard link to a file it cannot see.
        assert (a.cwd / "bv").is_symlink() and (a.cwd / "own-hard.txt").stat().st_nlink == 2
        assert not any((a.cwd / h).exists() for h in ("hv", "hk", "ht"))
        decisions = await a.decisions()
        for name in [*links, "bv", "bk", *through]:
            assert _denied(decisions, "Read", "file_path", str(a.cwd / name)), (name, decisions)
        assert _denied(decisions, "Write", "file_path", str(a.cwd / "lv"))
        assert _denied(decisions, "Write", "file_path", str(a.cwd / "ld/planted.txt"))
        assert _denied(decisions, "Grep", "path", "lcfg") or _denied(decisions, "Grep", "path", str(a.cwd / "lcfg"))
        assert _denied(decisions, "Glob", "path", "ld") or _denied(decisions, "Glob", "path", str(a.cwd / "ld"))
        assert world.snapshot() == before
        out = await a.outputs()
        assert a.own in out[f"Read {a.cwd}/own-hard.txt"] and a.own in out["Bash cat own-hard.txt"]
        assert a.own in out["Grep OWN- @."]
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))


async def _global_file_reader(world: World) -> tuple[str, str]:
    """An administrator's global stdio server whose tool reads any path it is given; any user may attach it."""
    admin = await world.users.create(admin=True)
    name = f"reader{uuid.uuid4().hex[:6]}"
    config = {"command": sys.executable, "args": [str(FILE_READER)]}
    body = {"name": name, "server_type": "stdio", "config": config, "is_global": True}
    r = await world.client.post("/api/v1/mcp-servers", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    return name, r.json()["id"]


class TestMcpStdio:
    async def test_a_user_cannot_register_a_stdio_server(self, world: World, attacker: SessionsApi) -> None:
        config = {"command": sys.executable, "args": [str(FILE_READER)]}
        body = {"name": f"reader{uuid.uuid4().hex[:6]}", "server_type": "stdio", "config": config}
        r = await world.client.post("/api/v1/mcp-servers", json=body, headers=attacker.user.headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "mcp_stdio_admin_only", r.text

    async def test_a_file_reading_tool_sees_only_the_workspace(self, world: World, attacker: SessionsApi) -> None:
        """An administrator's global stdio server whose tool reads any path it is given: the agent CLI starts it in
        its own confined world, where the data dir holds nothing but the session's own directory."""
        name, server_id = await _global_file_reader(world)
        a = await new_attack(world, attacker, mcp_server_ids=[server_id])
        v_file = world.victim_file
        targets = [v_file, world.victim_dir / "notes" / "deep.txt", world.secret_file, world.database]
        targets += [world.transcript, world.legacy_transcript, Path(f"{world.database}-wal")]
        listed = [
            world.data_dir / "workdirs",
            world.victim_dir,
            world.transcript.parent,
            world.legacy_transcript.parent,
        ]
        listed += [world.data_dir / "claude" / "agents"]

        def call(tool: str, path: Path | str) -> str:
            return f"mcp {name} {tool} {json.dumps({'path': str(path)})}"

        (a.cwd / "lv").symlink_to(world.victim_file)
        done = await a.turn(
            *(call("read_file", t) for t in targets),
            *(call("list_dir", d) for d in listed),
            call("read_file", a.cwd / "lv"),
            call("read_file", a.cwd / "own.txt"),  # the control
        )
        calls = await attacker.items(a.id, "tool-calls")
        assert [c["name"] for c in calls] == [f"mcp__{name}__{t}" for t in ["read_file"] * 7 + ["list_dir"] * 5] + [
            f"mcp__{name}__read_file"
        ] * 2
        assert all(c["status"] == "completed" for c in calls), calls
        assert a.own in json.dumps(calls[-1]["output"])
        # Of the CLI state directories, the agent's world holds its own session's alone.
        agents_listing = next(c for c in calls if c["input"] == {"path": str(world.data_dir / "claude" / "agents")})
        assert agents_listing["output"]["structuredContent"] == {"result": a.id}, agents_listing
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))


class TestBash:
    async def test_sandboxed_bash_reads_and_writes_nothing_outside(self, world: World, attacker: SessionsApi) -> None:
        a = await new_attack(world, attacker)
        before = world.snapshot()
        d, v, vdir = world.data_dir, world.victim_file, world.victim_dir
        reads = (
            f"run: cat {v} {vdir}/notes/deep.txt {world.secret_file} {world.transcript} {world.legacy_transcript}; "
            f"head -c 4096 {world.database} | strings; cat ../{world.victim_id}/private.txt ../../secret_key; "
            f"ls -laR {d} | head -50; grep -ra MARKER {d} | head; find {d} -name '*.jsonl' | head; "
            f"cat /proc/{os.getpid()}/root{world.secret_file} /proc/*/root{v}"
        )
        writes = (
            f"run: echo PLANTED > {vdir}/planted.txt; echo OVERWRITTEN > {world.secret_file}; "
            f"cp own.txt ../{world.victim_id}/copied.txt; echo PLANTED >> {world.transcript}; echo wrote"
        )
        done = await a.turn(
            reads,
            writes,
            f"run-unsandboxed: cat {v} {world.secret_file} {world.transcript}",
            "run: cat own.txt; echo MINE > mine.txt",  # the control
        )
        assert world.snapshot() == before
        decisions = await a.decisions()
        assert [(t, dec, by) for t, dec, by, _ in decisions] == [
            ("Bash", "allow", "mode"),
            ("Bash", "allow", "mode"),
            ("Bash", "deny", "sandbox"),
            ("Bash", "allow", "mode"),
        ]
        out = await a.outputs()
        assert a.own in out["Bash cat own.txt; echo MINE > mine.txt"]
        assert (a.cwd / "mine.txt").read_text() == "MINE\n"
        assert "No such file" in out[f"Bash {reads.removeprefix('run: ')}"]
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))


def _marker_free_tree(world: World, root: Path) -> dict[str, str]:
    """Every entry below root: links by their target, files checked for markers."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            assert_no_marker(world, path.read_bytes().decode("utf-8", "replace"))
            found[rel] = "file"
    return found


class TestForkArchiveDownload:
    async def test_fork_copies_links_as_links_and_the_fork_cannot_follow_them(
        self, world: World, attacker: SessionsApi
    ) -> None:
        a = await new_attack(world, attacker)
        links = _plant_links(world, a.cwd)
        await a.turn("read own.txt")  # a conversation for the fork to carry
        r = await world.client.post(f"/api/v1/sessions/{a.id}/fork", json={}, headers=attacker.user.headers)
        assert r.status_code == 201, r.text
        child = Attack(attacker, r.json()["id"], world.workdir(r.json()["id"]), a.own)
        tree = _marker_free_tree(world, child.cwd)
        assert {n: tree[n] for n in links} == {n: f"-> {t}" for n, t in links.items()}
        assert tree["own.txt"] == "file"
        done = await child.turn(
            *(f"read {n}" for n in links),
            "read ld/private.txt",
            "read lwd/secret_key",
            f"run: cat {' '.join(links)} ld/private.txt lwd/secret_key",
            "read own.txt",
        )
        # The fork carries its parent's conversation (brought into its own CLI state directory).
        assert (await child.turn("recall"))["result"] == "Recall: read own.txt"
        decisions = await child.decisions()
        for name in [*links, "ld/private.txt", "lwd/secret_key"]:
            assert _denied(decisions, "Read", "file_path", str(child.cwd / name)), (name, decisions)
        assert a.own in (await child.outputs())[f"Read {child.cwd}/own.txt"]
        # A fork sent a query at once (`fork: true`) gets the same copy.
        r = await attacker.query(a.id, "run: cat lv lk ltr", fork=True)
        assert r.status_code == 200, r.text
        second = r.json()["id"]
        assert second not in (a.id, child.id)
        _marker_free_tree(world, world.workdir(second))
        said = json.dumps(done) + r.text + await _everything(world, attacker, [a.id, child.id, second])
        assert a.own in said  # the control read is in what is checked
        assert_no_marker(world, said)

    async def test_archive_and_restore_keep_links_as_links(self, world: World, attacker: SessionsApi) -> None:
        a = await new_attack(world, attacker)
        links = _plant_links(world, a.cwd)
        await a.turn("read own.txt")
        r = await world.client.post(f"/api/v1/sessions/{a.id}/archive", headers=attacker.user.headers)
        assert r.status_code == 201, r.text
        assert not a.cwd.exists()
        archive = service.archive_path(app_state(world.app), uuid.UUID(a.id)).read_bytes()
        members = tar_members(archive)
        assert members["own.txt"] == (a.own + "\n").encode()
        assert all(members[name] is None for name in links)
        assert_no_marker(world, gzip.decompress(archive).decode("utf-8", "replace"))
        r2 = await world.client.post(f"/api/v1/sessions/{a.id}/resume", headers=attacker.user.headers)
        assert r2.status_code == 200, r2.text
        tree = _marker_free_tree(world, a.cwd)
        assert {n: tree[n] for n in links} == {n: f"-> {t}" for n, t in links.items()}
        done = await a.turn("read lv", "read ld/private.txt", "run: cat lv lk ld/private.txt", "read own.txt")
        decisions = await a.decisions()
        assert _denied(decisions, "Read", "file_path", str(a.cwd / "lv"))
        assert _denied(decisions, "Read", "file_path", str(a.cwd / "ld/private.txt"))
        assert a.own in (await a.outputs())[f"Read {a.cwd}/own.txt"]
        # A new agent process resumed the conversation from the session's own CLI state directory.
        assert (await a.turn("recall"))["result"] == "Recall: read own.txt"
        said = r.text + r2.text + json.dumps(done) + await _everything(world, attacker, [a.id])
        assert_no_marker(world, said)

    async def test_downloads_and_file_views_do_not_follow_links(self, world: World, attacker: SessionsApi) -> None:
        a = await new_attack(world, attacker)
        links = _plant_links(world, a.cwd)
        base, headers = f"/api/v1/sessions/{a.id}", attacker.user.headers
        download = await world.client.get(f"{base}/workdir/download", headers=headers)
        assert download.status_code == 200
        members = tar_members(download.content)
        assert members["own.txt"] == (a.own + "\n").encode() and all(members[n] is None for n in links)
        answers = [download.text, gzip.decompress(download.content).decode("utf-8", "replace")]
        listing = await world.client.get(f"{base}/files", headers=headers)
        assert listing.status_code == 200
        kinds = {e["name"]: e["type"] for e in listing.json()["entries"]}
        assert {n: kinds[n] for n in links} == dict.fromkeys(links, "symlink") and kinds["own.txt"] == "file"
        answers.append(listing.text)
        refused = [
            *links,
            "ld/private.txt",
            "ld/notes/deep.txt",
            "lwd/secret_key",
            f"lcfg/agents/{world.victim_id}",
            f"../{world.victim_id}/private.txt",
            "../../secret_key",
            str(world.victim_file),
            str(world.secret_file),
        ]
        for path in refused:
            for route in ("files/content", "files"):
                r = await world.client.get(f"{base}/{route}", params={"path": path}, headers=headers)
                assert r.status_code in (400, 404), (route, path, r.status_code)
                answers.append(r.text)
        own = await world.client.get(f"{base}/files/content", params={"path": "own.txt"}, headers=headers)
        assert own.status_code == 200 and own.text == a.own + "\n"
        # Another user's session, by id: the same 404 as a session that does not exist.
        for route in ("workdir/download", "files", "files/content?path=private.txt"):
            r = await world.client.get(f"/api/v1/sessions/{world.victim_id}/{route}", headers=headers)
            assert r.status_code == 404, (route, r.text)
            answers.append(r.text)
        assert_no_marker(world, "\n".join(answers) + await _everything(world, attacker, [a.id]))


class TestReports:
    async def test_a_report_lists_links_and_holds_no_outside_bytes(self, world: World, attacker: SessionsApi) -> None:
        a = await new_attack(world, attacker)
        links = _plant_links(world, a.cwd)
        await a.turn("read lv", "read lk", "run: cat lv lk ltr ld/private.txt", "read own.txt")
        r = await world.client.post(f"/api/v1/sessions/{a.id}/report", json={}, headers=attacker.user.headers)
        assert r.status_code == 201, r.text
        report = r.json()
        files = {f["path"]: f["kind"] for f in report["data"]["files"]["items"]}
        assert {n: files[n] for n in links} == dict.fromkeys(links, "symlink")
        answers = [r.text]
        for fmt in ("json", "html"):
            got = await world.client.get(
                f"/api/v1/reports/{report['id']}/download", params={"format": fmt}, headers=attacker.user.headers
            )
            assert got.status_code == 200, got.text
            answers.append(got.text)
        said = "\n".join(answers)
        assert a.own in said  # the report carries what the agent read inside its workspace
        assert_no_marker(world, said + await _everything(world, attacker, [a.id]))

    @pytest.mark.skipif(
        not confine.own_pid_namespace_available(), reason="unshare --pid is not possible under bubblewrap here"
    )
    async def test_a_file_reading_tool_cannot_go_through_proc(self, world: World, attacker: SessionsApi) -> None:
        name, server_id = await _global_file_reader(world)
        a = await new_attack(world, attacker, mcp_server_ids=[server_id])
        pid = os.getpid()
        done = await a.turn(
            f"mcp {name} read_file {json.dumps({'path': f'/proc/{pid}/root{world.secret_file}'})}",
            f"mcp {name} read_file {json.dumps({'path': f'/proc/{pid}/root{world.victim_file}'})}",
            f"mcp {name} read_file {json.dumps({'path': str(a.cwd / 'own.txt')})}",
        )
        calls = await attacker.items(a.id, "tool-calls")
        assert len(calls) == 3 and a.own in json.dumps(calls[-1]["output"])
        assert_no_marker(world, json.dumps(done) + await _everything(world, attacker, [a.id]))
