"""Fork (history and files), archive and resume, and symlinks that must never carry their target's bytes."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.sessions import service
from tests.conftest import SessionsApi, app_state, assert_error_shape

pytestmark = pytest.mark.slow


async def download_raw(sessions: SessionsApi, session_id: str) -> bytes:
    r = await sessions.client.get(f"/api/v1/sessions/{session_id}/workdir/download", headers=sessions.user.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    return r.content


def tar_entries(content: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_files(content: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def files_of(sessions: SessionsApi, session_id: str) -> dict[str, bytes]:
    return tar_files(await download_raw(sessions, session_id))


async def fork(sessions: SessionsApi, session_id: str, **body: Any) -> dict[str, Any]:
    r = await sessions.client.post(f"/api/v1/sessions/{session_id}/fork", json=body, headers=sessions.user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def completed(sessions: SessionsApi, session_id: str, prompt: str) -> dict[str, Any]:
    r = await sessions.query(session_id, prompt)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["turn_status"] == "completed", body
    return body


class TestFork:
    async def test_fork_copies_history_and_files_and_leaves_the_parent_alone(
        self, app: object, sessions: SessionsApi
    ) -> None:
        state = app_state(app)
        first_prompt = f"write f.txt: original {uuid.uuid4().hex}"
        parent = await sessions.create(name="parent", permission_mode="bypassPermissions")
        await completed(sessions, parent["id"], first_prompt)
        original = (await files_of(sessions, parent["id"]))["f.txt"]
        parent_messages = await sessions.items(parent["id"], "messages")
        assert parent_messages[0]["text"] == first_prompt

        child = await fork(sessions, parent["id"], name="child")
        assert child["id"] != parent["id"] and child["name"] == "child"
        assert child["is_fork"] is True and child["parent_session_id"] == parent["id"]
        assert child["permission_mode"] == "bypassPermissions"
        assert child["message_count"] == len(parent_messages)
        copied = await sessions.items(child["id"], "messages")
        assert [(m["role"], m["text"], m["content"]) for m in copied] == [
            (m["role"], m["text"], m["content"]) for m in parent_messages
        ]
        assert all(m["session_id"] == child["id"] for m in copied)
        assert {m["id"] for m in copied}.isdisjoint(m["id"] for m in parent_messages)
        assert await files_of(sessions, child["id"]) == {"f.txt": original}

        where = service.workdir_of(state, uuid.UUID(child["id"]))
        await completed(sessions, child["id"], f"write {where}/g.txt: only in the fork\nwrite {where}/f.txt: changed")
        assert await files_of(sessions, child["id"]) == {"f.txt": b"changed", "g.txt": b"only in the fork"}
        assert await files_of(sessions, parent["id"]) == {"f.txt": original}
        assert len(await sessions.items(parent["id"], "messages")) == len(parent_messages)

        recall = await completed(sessions, child["id"], "recall")
        assert first_prompt in recall["result"], "the SDK fork must carry the parent's conversation"

    async def test_relative_paths_in_a_fork_land_in_the_forks_directory(
        self, app: object, sessions: SessionsApi
    ) -> None:
        parent = await sessions.create(permission_mode="bypassPermissions")
        await completed(sessions, parent["id"], "write p.txt: parent")
        child = await fork(sessions, parent["id"])
        await completed(sessions, child["id"], "write c.txt: child")
        (call,) = await sessions.items(child["id"], "tool-calls")
        where = service.workdir_of(app_state(app), uuid.UUID(child["id"]))
        assert call["input"]["file_path"] == f"{where}/c.txt"
        assert (await files_of(sessions, child["id"])).get("c.txt") == b"child"

    async def test_fork_without_the_working_directory_starts_empty(self, sessions: SessionsApi) -> None:
        parent = await sessions.create(permission_mode="bypassPermissions")
        await completed(sessions, parent["id"], "write kept.txt: parent only")
        child = await fork(sessions, parent["id"], include_working_directory=False)
        assert child["is_fork"] is True
        assert tar_entries(await download_raw(sessions, child["id"])) == {}
        assert (await files_of(sessions, parent["id"])) == {"kept.txt": b"parent only"}


class TestArchive:
    async def test_archive_then_resume_restores_the_directory(
        self, client: httpx.AsyncClient, sessions: SessionsApi
    ) -> None:
        s = await sessions.create(permission_mode="bypassPermissions")
        await completed(sessions, s["id"], "write kept.txt: keep me")
        url = f"/api/v1/sessions/{s['id']}"

        r = await client.post(f"{url}/archive", headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        meta = r.json()
        assert meta["session_id"] == s["id"]
        assert meta["size_bytes"] > 0 and meta["file_count"] == 1
        assert re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
        assert meta["restored_at"] is None
        assert (await sessions.get(s["id"]))["status"] == "archived"
        got = await client.get(f"{url}/archive", headers=sessions.user.headers)
        assert got.status_code == 200 and got.json() == meta

        assert_error_shape(await sessions.query(s["id"], "hello"), 409, "session_archived")
        assert_error_shape(await client.get(f"{url}/workdir/download", headers=sessions.user.headers), 404)

        resumed = await client.post(f"{url}/resume", headers=sessions.user.headers)
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "active"
        assert await files_of(sessions, s["id"]) == {"kept.txt": b"keep me"}
        after = (await client.get(f"{url}/archive", headers=sessions.user.headers)).json()
        assert after["restored_at"] is not None and after["sha256"] == meta["sha256"]
        assert (await completed(sessions, s["id"], "read kept.txt"))["result"].startswith("Done.")

    async def test_no_archive_is_404(self, client: httpx.AsyncClient, sessions: SessionsApi) -> None:
        s = await sessions.create()
        r = await client.get(f"/api/v1/sessions/{s['id']}/archive", headers=sessions.user.headers)
        assert_error_shape(r, 404)
        assert r.json()["error"]["code"] != "session_not_found"


class TestSymlinks:
    async def test_download_fork_and_archive_carry_the_link_never_the_target(
        self, app: object, client: httpx.AsyncClient, sessions: SessionsApi, tmp_path: Path
    ) -> None:
        state = app_state(app)
        marker = f"MARKER-{uuid.uuid4().hex}".encode()
        target = tmp_path / "outside-secret.txt"
        target.write_bytes(marker * 4)
        s = await sessions.create(permission_mode="bypassPermissions")
        await completed(sessions, s["id"], "write inside.txt: fine")
        path = service.workdir_of(state, uuid.UUID(s["id"]))
        (path / "leak").symlink_to(target)
        (path / "leakdir").symlink_to(tmp_path, target_is_directory=True)

        raw = await download_raw(sessions, s["id"])
        entries = tar_entries(raw)
        assert entries["leak"].type == tarfile.SYMTYPE and entries["leak"].linkname == str(target)
        assert entries["leakdir"].type == tarfile.SYMTYPE
        assert not [n for n in entries if n.startswith("leakdir/")], "a link to a directory must not be walked"
        assert marker not in gzip.decompress(raw)

        child = await fork(sessions, s["id"])
        child_path = service.workdir_of(state, uuid.UUID(child["id"]))
        assert os.path.islink(child_path / "leak") and os.readlink(child_path / "leak") == str(target)
        assert os.path.islink(child_path / "leakdir")
        assert (child_path / "inside.txt").read_bytes() == b"fine"
        child_raw = await download_raw(sessions, child["id"])
        assert tar_entries(child_raw)["leak"].type == tarfile.SYMTYPE
        assert marker not in gzip.decompress(child_raw)

        r = await client.post(f"/api/v1/sessions/{s['id']}/archive", headers=sessions.user.headers)
        assert r.status_code == 201, r.text
        assert marker not in gzip.decompress(service.archive_path(state, uuid.UUID(s["id"])).read_bytes())
        r = await client.post(f"/api/v1/sessions/{s['id']}/resume", headers=sessions.user.headers)
        assert r.status_code == 200, r.text
        assert os.path.islink(path / "leak") and os.readlink(path / "leak") == str(target)
        assert target.read_bytes() == marker * 4


class TestRefusedForkLeavesNothing:
    async def test_query_with_fork_over_budget_copies_no_files(self, app: object, sessions: SessionsApi) -> None:
        from agent_api.models import User
        from agent_api.runtime import workdir

        s = await sessions.create()
        state = app_state(app)
        async with state.db.transaction() as db:
            user = await db.get(User, uuid.UUID(sessions.user.id))
            assert user is not None
            user.monthly_budget_usd = 0.0
        before = set(os.listdir(workdir.workdir_root(state.settings.data_dir)))
        r = await sessions.query(s["id"], "hi", wait=False, fork=True)
        assert_error_shape(r, 402, "budget_exceeded")
        assert set(os.listdir(workdir.workdir_root(state.settings.data_dir))) == before
