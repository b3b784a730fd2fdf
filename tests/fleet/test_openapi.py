"""/v1/openapi.json says what the fleet does: every integer a request takes is bounded, every
parameter is named as the server reads it, the event stream is `text/event-stream`; and the
input that used to reach the store or a C conversion unchecked (and answer 500) is refused with
a sentence naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from leeward.fleet.api import ROUTES
from leeward.fleet.api.openapi import openapi_document
from leeward_protocol.base import MAX_HOURS, MAX_WHOLE

DOCUMENT = openapi_document(ROUTES)
SCHEMAS = DOCUMENT["components"]["schemas"]


def _walk(schema: Any, where: str, seen: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema reachable from `schema`, with where it is."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _walk(item, f"{where}[{i}]", seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            yield from _walk(SCHEMAS[name], name, seen)
        return
    yield where, schema
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for prop, sub in value.items():
                yield from _walk(sub, f"{where}.{prop}", seen)
        elif isinstance(value, (dict, list)):
            yield from _walk(value, f"{where}.{key}", seen)


def _taken() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema of what the API takes: bodies and path, query and header parameters."""
    seen: set[str] = set()
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                yield from _walk(media["schema"], label, seen)
            for param in operation.get("parameters", []):
                yield from _walk(param["schema"], f"{label} {param['name']}", set())


def test_every_integer_taken_has_a_range():
    integers = [(where, s) for where, s in _taken() if s.get("type") == "integer"]
    assert len(integers) >= 10, integers  # hours, versions, ids, sessions, modes...
    unbounded = [where for where, s in integers if "minimum" not in s or "maximum" not in s]
    assert not unbounded, f"integers without a range: {unbounded}"
    assert all(s["maximum"] <= MAX_WHOLE for _, s in integers)


def test_no_constraint_is_lost_on_the_way_to_the_document():
    # pydantic writes a constraint it could not apply under its own name (`ge`, `max_length`):
    # a validator in the wrong place. The document must say it in JSON Schema's words.
    stray = [
        (where, key)
        for where, s in _taken()
        for key in ("ge", "le", "gt", "lt", "min_length", "max_length")
        if key in s
    ]
    assert not stray


def test_parameters_are_named_as_the_server_reads_them():
    for path, operations in DOCUMENT["paths"].items():
        assert ":" not in path, path  # aiohttp's `{path:.+}` is `{path}` in the document
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, declared)
    wait = DOCUMENT["paths"]["/v1/agent/profile/wait"]["get"]["parameters"]
    assert {(p["name"], p["in"], p["required"]) for p in wait} == {
        ("environment", "query", True),
        ("after", "query", False),
    }
    events = DOCUMENT["paths"]["/v1/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"after", "all", "Last-Event-ID"}
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    create = DOCUMENT["paths"]["/v1/environments"]["post"]["parameters"]
    assert [p["name"] for p in create] == ["Idempotency-Key"]


def test_constraints_the_server_enforces_are_in_the_document():
    hours = SCHEMAS["ExtendEnvironment"]["properties"]["hours"]
    assert (hours["minimum"], hours["maximum"]) == (1, MAX_HOURS)
    assert SCHEMAS["CreateUser"]["properties"]["name"]["pattern"].startswith("^[a-z_]")
    assert "oneOf" in SCHEMAS["Dotfiles"] and "oneOf" in SCHEMAS["OneOff"]
    assert SCHEMAS["ProfileUpload"]["properties"]["source"]["anyOf"][0]["enum"] == [
        "cli",
        "dotfiles",
    ]
    stop = DOCUMENT["paths"]["/v1/admin/dns/stop"]["post"]["requestBody"]
    assert stop["required"] is False  # an empty body means the defaults


# ------------------------------------------------------------------- against a live fleet

HUGE = 10**30
"""Past every 64-bit column and C conversion: it used to answer 500 (OverflowError)."""


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/v1/profile?version=" + str(HUGE), None, "version"),
        ("GET", "/v1/profile?version=²", None, "version"),
        ("GET", "/v1/profile/files/.bashrc?version=-1", None, "version"),
        ("POST", "/v1/profile/restore", {"version": HUGE}, "version"),
        ("POST", "/v1/profile/restore", {"version": "3"}, "version"),
        ("GET", "/v1/profile/history?path=", None, "path"),
        ("GET", "/v1/environments?all=maybe", None, "all"),
        (
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "hours": HUGE},
            "hours",
        ),
        (
            "POST",
            "/v1/environments",
            {"kind": "container", "profile": "web", "hours": 2.5},
            "hours",
        ),
        ("POST", "/v1/environments/nobody/extend", {"hours": HUGE}, "hours"),
        ("POST", "/v1/environments/nobody/extend", {"hours": True}, "hours"),
        ("POST", "/v1/ssh/certificate", {"publicKey": "x", "hours": HUGE}, "hours"),
        (
            "POST",
            "/v1/profile/files",
            {"files": [{"path": "a", "content": "", "modifiedAt": 0}]},
            "files.0.modifiedAt",
        ),
    ],
)
async def test_out_of_range_input_is_a_422_naming_the_field(
    start_fleet, config_factory, sqlite_url, method, path, body, field
):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        status, got = await f.api.call(method, path, body)
        assert status == 422, got
        assert got["error"]["field"] == field, got
        assert got["error"]["message"].startswith(f"{field}: "), got


async def test_admin_and_agent_integers_are_bounded_too(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        status, got = await f.admin.call(
            "POST", "/v1/admin/tokens", {"user": "alice", "hours": HUGE}
        )
        assert (status, got["error"]["field"]) == (422, "hours"), got
        status, got = await f.admin.call("POST", "/v1/admin/dns/stop", {"blackHole": 0})
        assert (status, got["error"]["field"]) == (422, "blackHole"), got


async def test_event_ids_are_whole_numbers_in_range(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        for header in ("²", str(HUGE), "-1", "1.5"):
            status, got = await f.api.call("GET", "/v1/events", headers={"Last-Event-ID": header})
            assert (status, got["error"]["field"]) == (422, "Last-Event-ID"), (header, got)
        status, got = await f.api.call("GET", f"/v1/events?after={HUGE}")
        assert (status, got["error"]["field"]) == (422, "after"), got


async def test_a_405_says_what_is_allowed(start_fleet, config_factory, sqlite_url):
    async with start_fleet(config_factory(sqlite_url), background=False) as f:
        status, body = await f.api.call("TRACE", "/v1/environments")
        assert status == 405
        assert "GET" in body["error"]["message"] and "POST" in body["error"]["message"]
        async with f.api.http.request("PATCH", f.url + "/v1/environments") as response:
            assert response.status == 405
            assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
