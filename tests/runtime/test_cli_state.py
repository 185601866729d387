"""Each session's CLI state directory: its own conversations only, a fork's parent's brought over, links ignored."""

from __future__ import annotations

import uuid
from pathlib import Path

from agent_api.runtime import cli_state


def _transcript(root: Path, project: str, sdk_id: str, text: str) -> Path:
    path = root / "projects" / project / f"{sdk_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_session_gets_its_own_directory(tmp_path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    own = cli_state.prepare(tmp_path, a, None, None)
    assert own == tmp_path / "agents" / str(a) and own.is_dir() and own.stat().st_mode & 0o777 == 0o700
    assert cli_state.state_dir(tmp_path, b) != own


def test_a_fork_brings_its_parents_conversation_and_nothing_else(tmp_path: Path) -> None:
    parent, child, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sdk_id = str(uuid.uuid4())
    _transcript(cli_state.state_dir(tmp_path, parent), "-work-parent", sdk_id, "PARENT")
    (cli_state.state_dir(tmp_path, parent) / "projects" / "-work-parent" / sdk_id / "tool-results").mkdir(parents=True)
    _transcript(cli_state.state_dir(tmp_path, other), "-work-other", str(uuid.uuid4()), "OTHER")
    own = cli_state.prepare(tmp_path, child, sdk_id, parent)
    assert (own / "projects" / "-work-parent" / f"{sdk_id}.jsonl").read_text() == "PARENT"
    assert (own / "projects" / "-work-parent" / sdk_id / "tool-results").is_dir()
    assert sorted(p.name for p in (own / "projects").iterdir()) == ["-work-parent"]
    # Once there, the session's own copy is what a later start resumes.
    (own / "projects" / "-work-parent" / f"{sdk_id}.jsonl").write_text("CHILD")
    cli_state.prepare(tmp_path, child, sdk_id, parent)
    assert (own / "projects" / "-work-parent" / f"{sdk_id}.jsonl").read_text() == "CHILD"


def test_a_conversation_kept_in_the_shared_root_is_brought_over(tmp_path: Path) -> None:
    session, sdk_id = uuid.uuid4(), str(uuid.uuid4())
    _transcript(tmp_path, "-work-s", sdk_id, "BEFORE")
    own = cli_state.prepare(tmp_path, session, sdk_id, None)
    assert (own / "projects" / "-work-s" / f"{sdk_id}.jsonl").read_text() == "BEFORE"


def test_links_and_odd_ids_are_never_followed(tmp_path: Path) -> None:
    session, sdk_id = uuid.uuid4(), str(uuid.uuid4())
    secret = tmp_path / "secret_key"
    secret.write_text("SECRET")
    link = tmp_path / "projects" / "-work-s" / f"{sdk_id}.jsonl"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    own = cli_state.prepare(tmp_path, session, sdk_id, None)
    assert not (own / "projects").exists()
    for odd in ("*", "../x", "a/b", ""):
        assert not (cli_state.prepare(tmp_path, session, odd, None) / "projects").exists()


def test_links_the_agent_planted_in_its_own_directory_are_not_written_through(tmp_path: Path) -> None:
    """The copy runs outside the agent's confinement, into a directory the agent can write."""
    session, sdk_id = uuid.uuid4(), str(uuid.uuid4())
    _transcript(tmp_path, "-work-s", sdk_id, "BEFORE")
    victim = tmp_path / "agent-api.db"
    victim.write_text("DATABASE")
    own = cli_state.state_dir(tmp_path, session)
    # The transcript itself swapped for a link to the database: replaced, the database untouched.
    planted = own / "projects" / "-work-s" / f"{sdk_id}.jsonl"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(victim)
    cli_state.prepare(tmp_path, session, sdk_id, None)
    assert victim.read_text() == "DATABASE"
    assert not planted.is_symlink() and planted.read_text() == "BEFORE"
    # The project directory swapped for a link to somewhere else: nothing is written there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = uuid.uuid4()
    own_other = cli_state.state_dir(tmp_path, other)
    (own_other / "projects").mkdir(parents=True)
    (own_other / "projects" / "-work-s").symlink_to(elsewhere)
    cli_state.prepare(tmp_path, other, sdk_id, None)
    assert list(elsewhere.iterdir()) == []
