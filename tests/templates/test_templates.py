"""Session templates: CRUD, soft delete, full-text search ranking, popularity, the sharing matrix, use by sessions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import SessionsApi, UserAccount, Users, assert_error_shape, tar_members

TEMPLATES = "/api/v1/session-templates"


class Templates:
    def __init__(self, client: httpx.AsyncClient, user: UserAccount) -> None:
        self.client = client
        self.user = user

    async def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", f"t-{uuid.uuid4().hex[:8]}")
        r = await self.client.post(TEMPLATES, json=body, headers=self.user.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def search(self, **body: Any) -> dict[str, Any]:
        r = await self.client.post(f"{TEMPLATES}/search", json=body, headers=self.user.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def alice(users: Users) -> UserAccount:
    return await users.create()


@pytest.fixture
async def bob(users: Users) -> UserAccount:
    return await users.create()


class TestCrud:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.get(TEMPLATES), 401)
        assert_error_shape(await client.post(TEMPLATES, json={"name": "x"}), 401)

    async def test_create_read_replace(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        t = await Templates(client, alice).create(
            name="Reviewer",
            description="Reviews pull requests",
            category="development",
            tags=["Review", "git", "review"],
            system_prompt="Be terse.",
            permission_mode="acceptEdits",
            sdk_options={"max_turns": 3},
            allowed_tools=["Read"],
            initial_message="hello",
            seed_files=[{"path": "notes/a.txt", "content": "seed"}],
            usage_count=999,  # not settable: ignored
            user_id=str(uuid.uuid4()),  # not settable: ignored
        )
        assert t["name"] == "Reviewer" and t["category"] == "development"
        assert t["tags"] == ["review", "git"]
        assert t["usage_count"] == 0 and t["user_id"] == alice.id and t["is_owner"] is True
        assert t["sdk_options"] == {"max_turns": 3}
        r = await client.get(f"{TEMPLATES}/{t['id']}", headers=alice.headers)
        assert r.status_code == 200 and r.json()["seed_files"] == [{"path": "notes/a.txt", "content": "seed"}]
        r = await client.put(f"{TEMPLATES}/{t['id']}", json={"name": "Reviewer 2"}, headers=alice.headers)
        assert r.status_code == 200, r.text
        replaced = r.json()
        # PUT replaces: everything not sent goes back to its default.
        assert replaced["name"] == "Reviewer 2" and replaced["description"] is None
        assert replaced["category"] == "custom" and replaced["tags"] == [] and replaced["seed_files"] == []

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"name": ""},
            {"name": "x", "category": "nonsense"},
            {"name": "x", "permission_mode": "yolo"},
            {"name": "x", "seed_files": [{"path": "../escape.txt", "content": "x"}]},
            {"name": "x", "seed_files": [{"path": "/etc/passwd", "content": "x"}]},
            {"name": "x", "seed_files": [{"path": "a", "content": "x"}, {"path": "a/b", "content": "y"}]},
            {"name": "x", "seed_files": [{"path": "n" * 256, "content": "x"}]},
            {"name": "x", "blocked_commands": ["("]},
            {"name": "x", "mcp_server_ids": [str(uuid.uuid4())]},
            {"name": "x", "tags": ["t"] * 21},
        ],
    )
    async def test_bad_input_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, alice: UserAccount, body: dict[str, Any]
    ) -> None:
        before = (await client.get(TEMPLATES, params={"scope": "my"}, headers=alice.headers)).json()["total"]
        assert_error_shape(await client.post(TEMPLATES, json=body, headers=alice.headers), 422)
        after = (await client.get(TEMPLATES, params={"scope": "my"}, headers=alice.headers)).json()["total"]
        assert after == before

    async def test_soft_delete_hides_but_keeps_sessions_working(
        self, client: httpx.AsyncClient, alice: UserAccount
    ) -> None:
        api = Templates(client, alice)
        t = await api.create(system_prompt="Kept")
        session = await SessionsApi(client, alice).create(template_id=t["id"])
        r = await client.delete(f"{TEMPLATES}/{t['id']}", headers=alice.headers)
        assert r.status_code == 204
        assert_error_shape(await client.get(f"{TEMPLATES}/{t['id']}", headers=alice.headers), 404, "template_not_found")
        listed = (await client.get(TEMPLATES, params={"scope": "my", "page_size": 100}, headers=alice.headers)).json()
        assert t["id"] not in {i["id"] for i in listed["items"]}
        kept = await SessionsApi(client, alice).get(session["id"])
        assert kept["template_id"] == t["id"] and kept["system_prompt"] == "Kept"
        assert_error_shape(
            await client.post("/api/v1/sessions", json={"template_id": t["id"]}, headers=alice.headers),
            422,
            "template_not_found",
        )

    async def test_list_envelope_scope_and_category(
        self, client: httpx.AsyncClient, alice: UserAccount, bob: UserAccount
    ) -> None:
        api = Templates(client, alice)
        mine = [await api.create(category="security") for _ in range(3)]
        await Templates(client, bob).create(category="security", is_public=True)
        r = await client.get(TEMPLATES, params={"scope": "my", "page_size": 2}, headers=alice.headers)
        body = r.json()
        assert body["total"] == 3 and body["total_pages"] == 2 and len(body["items"]) == 2
        assert [i["id"] for i in body["items"]] == [m["id"] for m in reversed(mine)][:2]  # newest first
        r = await client.get(
            TEMPLATES, params={"scope": "accessible", "category": "security", "page_size": 100}, headers=alice.headers
        )
        owners = {i["user_id"] for i in r.json()["items"]}
        assert alice.id in owners and bob.id in owners
        assert_error_shape(await client.get(TEMPLATES, params={"scope": "everyone"}, headers=alice.headers), 422)


class TestSearch:
    async def test_ranked_by_relevance_with_filters(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        api = Templates(client, alice)
        word = f"kube{uuid.uuid4().hex[:6]}"
        in_description = await api.create(name="Cluster helper", description=f"Helps with {word} clusters")
        in_name = await api.create(name=f"{word} deployer", description="Deploys things", category="production")
        in_tags = await api.create(name="Ops", tags=[word])
        await api.create(name="Unrelated", description="Nothing to see")
        found = await api.search(search_term=word, scope="my")
        assert [i["id"] for i in found["items"]] == [in_name["id"], in_tags["id"], in_description["id"]]
        assert found["total"] == 3
        prefix = await api.search(search_term=word[:-2], scope="my")  # prefix matches too
        assert {i["id"] for i in prefix["items"]} == {in_name["id"], in_tags["id"], in_description["id"]}
        only_production = await api.search(search_term=word, category="production", scope="my")
        assert [i["id"] for i in only_production["items"]] == [in_name["id"]]
        by_tag = await api.search(tags=[word.upper()], scope="my")
        assert [i["id"] for i in by_tag["items"]] == [in_tags["id"]]
        paged = await api.search(search_term=word, scope="my", page=2, page_size=2)
        assert paged["total"] == 3 and [i["id"] for i in paged["items"]] == [in_description["id"]]

    async def test_search_only_sees_what_the_caller_may_see(
        self, client: httpx.AsyncClient, alice: UserAccount, bob: UserAccount
    ) -> None:
        word = f"secret{uuid.uuid4().hex[:6]}"
        await Templates(client, bob).create(name=f"{word} private")
        public = await Templates(client, bob).create(name=f"{word} public", is_public=True)
        found = await Templates(client, alice).search(search_term=word)
        assert [i["id"] for i in found["items"]] == [public["id"]]

    async def test_non_ascii_tags_and_words_are_found(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        api = Templates(client, alice)
        tag = f"été{uuid.uuid4().hex[:6]}"
        t = await api.create(name="Unicode", tags=[tag], description="Überprüfung der Qualität")
        assert [i["id"] for i in (await api.search(tags=[tag.upper()], scope="my"))["items"]] == [t["id"]]
        assert t["id"] in {i["id"] for i in (await api.search(search_term=tag, scope="my"))["items"]}
        assert t["id"] in {i["id"] for i in (await api.search(search_term="überprüfung", scope="my"))["items"]}

    async def test_search_syntax_is_never_an_error(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        for term in ['"unbalanced', "a AND OR NOT", "x:* | !y", "near(", "*", "' OR 1=1 --", "a_b:*", "ß & ü | !ö"]:
            r = await client.post(f"{TEMPLATES}/search", json={"search_term": term}, headers=alice.headers)
            assert r.status_code == 200, (term, r.text)


class TestPopular:
    async def test_most_used_first_among_visible(
        self, client: httpx.AsyncClient, alice: UserAccount, bob: UserAccount
    ) -> None:
        sessions = SessionsApi(client, alice)
        once = await Templates(client, alice).create()
        thrice = await Templates(client, bob).create(is_public=True)
        hidden = await Templates(client, bob).create()  # private to bob: never in alice's list
        for t, times in ((once, 1), (thrice, 3)):
            for _ in range(times):
                await sessions.create(template_id=t["id"])
        for _ in range(5):
            await SessionsApi(client, bob).create(template_id=hidden["id"])
        r = await client.get(f"{TEMPLATES}/popular/top", params={"limit": 100}, headers=alice.headers)
        assert r.status_code == 200
        items = r.json()["items"]
        ids = [t["id"] for t in items]
        assert hidden["id"] not in ids
        assert ids.index(thrice["id"]) < ids.index(once["id"])
        counts = {t["id"]: t["usage_count"] for t in items}
        assert counts[thrice["id"]] == 3 and counts[once["id"]] == 1
        r = await client.get(f"{TEMPLATES}/popular/top", params={"limit": 1}, headers=alice.headers)
        assert len(r.json()["items"]) == 1 and r.json()["total"] >= 2 and r.json()["page_size"] == 1
        assert_error_shape(
            await client.get(f"{TEMPLATES}/popular/top", params={"limit": 0}, headers=alice.headers), 422
        )


class TestSharing:
    async def test_matrix(self, client: httpx.AsyncClient, users: Users) -> None:
        owner, shared, other = await users.create(), await users.create(), await users.create()
        t = await Templates(client, owner).create(name="Shared one")
        url = f"{TEMPLATES}/{t['id']}"
        # Private: only the owner sees it.
        assert (await client.get(url, headers=owner.headers)).status_code == 200
        for u in (shared, other):
            assert_error_shape(await client.get(url, headers=u.headers), 404, "template_not_found")
            assert_error_shape(await client.put(url, json={"name": "x"}, headers=u.headers), 404)
            assert_error_shape(await client.delete(url, headers=u.headers), 404)
            assert_error_shape(await client.patch(f"{url}/sharing", json={"is_public": True}, headers=u.headers), 404)
        r = await client.patch(f"{url}/sharing", json={"shared_with_user_ids": [shared.id]}, headers=owner.headers)
        assert r.status_code == 200 and r.json()["shared_with_user_ids"] == [shared.id]
        # Shared: the shared user reads and uses it but cannot change it; others still get 404.
        r = await client.get(url, headers=shared.headers)
        assert r.status_code == 200 and r.json()["is_owner"] is False and r.json()["shared_with_user_ids"] == []
        assert (await SessionsApi(client, shared).create(template_id=t["id"]))["template_id"] == t["id"]
        for listing in (
            await client.get(TEMPLATES, params={"page_size": 100}, headers=shared.headers),
            await client.post(f"{TEMPLATES}/search", json={"search_term": "shared"}, headers=shared.headers),
            await client.get(f"{TEMPLATES}/popular/top", params={"limit": 100}, headers=shared.headers),
        ):
            assert t["id"] in {i["id"] for i in listing.json()["items"]}
        assert_error_shape(await client.put(url, json={"name": "x"}, headers=shared.headers), 403, "not_template_owner")
        assert_error_shape(await client.delete(url, headers=shared.headers), 403)
        assert_error_shape(await client.patch(f"{url}/sharing", json={"is_public": True}, headers=shared.headers), 403)
        assert_error_shape(await client.get(url, headers=other.headers), 404)
        assert_error_shape(
            await client.post("/api/v1/sessions", json={"template_id": t["id"]}, headers=other.headers), 422
        )
        # Public: everyone reads; still only the owner changes it.
        await client.patch(f"{url}/sharing", json={"is_public": True}, headers=owner.headers)
        assert (await client.get(url, headers=other.headers)).status_code == 200
        assert_error_shape(await client.put(url, json={"name": "x"}, headers=other.headers), 403)
        assert (await client.get(url, headers=owner.headers)).json()["name"] == "Shared one"
        # Unsharing takes it away again.
        await client.patch(
            f"{url}/sharing", json={"is_public": False, "shared_with_user_ids": []}, headers=owner.headers
        )
        for u in (shared, other):
            assert_error_shape(await client.get(url, headers=u.headers), 404)

    async def test_unknown_user_is_422_and_changes_nothing(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        t = await Templates(client, alice).create()
        r = await client.patch(
            f"{TEMPLATES}/{t['id']}/sharing",
            json={"is_public": True, "shared_with_user_ids": [str(uuid.uuid4())]},
            headers=alice.headers,
        )
        assert_error_shape(r, 422, "user_not_found")
        after = (await client.get(f"{TEMPLATES}/{t['id']}", headers=alice.headers)).json()
        assert after["is_public"] is False and after["shared_with_user_ids"] == []


class TestSessionFromTemplate:
    async def test_body_fields_override_the_template(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        t = await Templates(client, alice).create(
            name="Base",
            system_prompt="From template",
            permission_mode="acceptEdits",
            allowed_tools=["Read"],
            sdk_options={"max_turns": 4},
        )
        sessions = SessionsApi(client, alice)
        plain = await sessions.create(template_id=t["id"])
        assert plain["system_prompt"] == "From template" and plain["permission_mode"] == "acceptEdits"
        assert plain["allowed_tools"] == ["Read"] and plain["sdk_options"] == {"max_turns": 4}
        assert plain["name"] == "Base"
        custom = await sessions.create(template_id=t["id"], system_prompt="Mine", allowed_tools=[], name="S")
        assert custom["system_prompt"] == "Mine" and custom["allowed_tools"] == [] and custom["name"] == "S"
        assert custom["permission_mode"] == "acceptEdits"
        used = (await client.get(f"{TEMPLATES}/{t['id']}", headers=alice.headers)).json()
        assert used["usage_count"] == 2 and used["last_used_at"] is not None

    async def test_seed_files_land_in_the_working_directory(
        self, client: httpx.AsyncClient, alice: UserAccount
    ) -> None:
        t = await Templates(client, alice).create(
            seed_files=[{"path": "README.md", "content": "# hi"}, {"path": "src/app.py", "content": "print(1)"}]
        )
        s = await SessionsApi(client, alice).create(template_id=t["id"])
        r = await client.get(f"/api/v1/sessions/{s['id']}/workdir/download", headers=alice.headers)
        assert r.status_code == 200
        members = tar_members(r.content)
        assert members["README.md"] == b"# hi" and members["src/app.py"] == b"print(1)"

    @pytest.mark.slow
    async def test_initial_message_starts_the_first_turn(self, client: httpx.AsyncClient, alice: UserAccount) -> None:
        t = await Templates(client, alice).create(
            initial_message="read README.md", seed_files=[{"path": "README.md", "content": "seeded text"}]
        )
        sessions = SessionsApi(client, alice)
        s = await sessions.create(template_id=t["id"])
        done = await sessions.wait_status(s["id"], "active", timeout=90)
        assert done["message_count"] >= 2
        calls = await sessions.items(s["id"], "tool-calls")
        assert [c["name"] for c in calls] == ["Read"]
        messages = await sessions.items(s["id"], "messages")
        assert messages[0]["role"] == "user" and messages[0]["text"] == "read README.md"
