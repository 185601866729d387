"""The published JSON Schema: served, itself valid, strict, and in step with the data the service builds."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from agent_api.reports.schemas import ReportData
from tests.conftest import UserAccount, assert_error_shape
from tests.reports.conftest import Factory, History, ReportsApi, ToolUse, published_schema, validate_report_json


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target, root)


def _paths(node: dict[str, Any], root: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every property path a schema allows, e.g. `timeline.entries[].input`, following $ref, anyOf and oneOf."""
    node = _resolve(node, root)
    for branch in node.get("anyOf", []) + node.get("oneOf", []):
        yield from _paths(branch, root, prefix)
    if "items" in node:
        yield from _paths(node["items"], root, prefix + "[]")
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from _paths(child, root, path)


class TestServed:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error_shape(await client.get("/api/v1/reports/schema"), 401, "unauthorized")

    async def test_the_route_serves_the_published_file(self, client: httpx.AsyncClient, owner: UserAccount) -> None:
        r = await client.get("/api/v1/reports/schema", headers=owner.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "application/schema+json"
        assert r.json() == published_schema()
        jsonschema.Draft202012Validator.check_schema(r.json())


class TestStrict:
    @pytest.fixture
    async def document(self, factory: Factory, reports: ReportsApi, owner: UserAccount) -> dict[str, Any]:
        sid = await factory.session(owner)
        (factory.workdir(sid) / "out.txt").write_text("x")
        await factory.turn(sid, History(tools=[ToolUse("Bash", {"command": "true"}, "")]))
        data: dict[str, Any] = (await reports.create(sid))["data"]
        validate_report_json(data)
        return data

    @pytest.mark.parametrize(
        ("where", "change"),
        [
            ("an unknown top-level key", lambda d: d.update(secret="x")),
            ("a missing final answer", lambda d: d.pop("final_answer")),
            ("an unknown status", lambda d: d.update(status="great")),
            ("a tool call without input", lambda d: d["timeline"]["entries"][1].pop("input")),
            ("a file with a negative size", lambda d: d["files"]["items"][0].update(size_bytes=-1)),
            ("a timestamp that is not one", lambda d: d.update(generated_at="yesterday")),
            ("a bad id", lambda d: d.update(report_id="not-a-uuid")),
        ],
    )
    async def test_a_changed_document_is_rejected(self, document: dict[str, Any], where: str, change: Any) -> None:
        broken = copy.deepcopy(document)
        change(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_report_json(broken)


class TestInStepWithTheModel:
    def test_same_property_paths_as_the_data_the_service_builds(self) -> None:
        model = ReportData.model_json_schema(mode="serialization")
        published = published_schema()
        assert sorted(set(_paths(model, model))) == sorted(set(_paths(published, published)))

    def test_required_everywhere(self) -> None:
        published = published_schema()

        def objects(node: Any) -> Iterator[dict[str, Any]]:
            if isinstance(node, dict):
                if "properties" in node:
                    yield node
                for value in node.values():
                    yield from objects(value)
            elif isinstance(node, list):
                for value in node:
                    yield from objects(value)

        found = list(objects(published))
        assert len(found) >= 9
        for obj in found:
            assert set(obj["required"]) == set(obj["properties"]) and obj["additionalProperties"] is False
