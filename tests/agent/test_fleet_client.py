"""The agent's fleet client against a small fleet that records each request: every route's
request as the fleet reads it, the answers as models, and what is not the model expected."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web

from leeward.agent.fleet import AgentFleet, FleetEndpoint
from leeward.common.errors import FleetError
from leeward_protocol.fleet import (
    AgentHeartbeat,
    AgentReport,
    ErrorBody,
    ErrorDetail,
    SetupItem,
    SyncStatus,
)
from leeward_protocol.profile import (
    BlobRequest,
    FileUpload,
    ProfileUpload,
    UploadResult,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

AA, BB = "a" * 64, "b" * 64
"""Two SHA-256 digests (as the fleet names blobs)."""


class RecordingFleet:
    """The agent routes, answering what `answers` holds for each path (the fleet's own models by
    default), and keeping each request: method, path, query, headers and raw body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str], bytes]] = []
        self.answers: dict[str, tuple[int, object]] = {
            "/v1/agent/heartbeat": (200, {"intervalSeconds": 7.5}),
            "/v1/agent/report": (204, None),
            "/v1/agent/profile/blobs": (200, {"blobs": {AA: base64.b64encode(b"hi").decode()}}),
            "/v1/agent/profile/wait": (200, {"version": 3}),
            "/v1/agent/profile": (200, {"version": 4, "stored": [".bashrc"]}),
        }

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            (request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        status, answer = self.answers[request.path]
        if request.path == "/v1/agent/profile" and request.method == "GET":
            status, answer = (
                200,
                {
                    "owner": "alice",
                    "profile": None,
                    "tracked": [".bashrc"],
                    "debounceSeconds": 0.25,
                },
            )
        if answer is None:
            return web.Response(status=status)
        return web.json_response(answer, status=status)


@pytest.fixture
async def recording() -> AsyncIterator[tuple[RecordingFleet, AgentFleet]]:
    fleet = RecordingFleet()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fleet.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = AgentFleet(lambda: FleetEndpoint(f"http://127.0.0.1:{port}/", "tok", "e-abc123"))
    try:
        yield fleet, client
    finally:
        await runner.cleanup()


async def test_each_route_sends_its_model_and_reads_its_answer(
    recording: tuple[RecordingFleet, AgentFleet],
) -> None:
    fleet, client = recording
    ack = await client.heartbeat(sessions=2, agent_version="1.2.3", within=5)
    assert ack.interval_seconds == 7.5
    item = SetupItem(kind="feature", name="git", state="installed", started_at=T0)
    await client.report(setup=[item])
    await client.report(sync=SyncStatus(version=3, synced_at=T0))
    profile = await client.profile()
    assert profile.owner == "alice" and profile.tracked == [".bashrc"]
    assert await client.blobs([AA, BB]) == {AA: b"hi"}
    assert await client.wait(2) == 3
    upload = ProfileUpload(files=[FileUpload(path=".bashrc", content="aGk=", modified_at=T0)])
    assert await client.upload(upload) == UploadResult(version=4, stored=[".bashrc"])

    routes = [(method, path, query) for method, path, query, _, _ in fleet.requests]
    profile_query = {"environment": "e-abc123"}
    assert routes == [
        ("POST", "/v1/agent/heartbeat", {}),
        ("POST", "/v1/agent/report", {}),
        ("POST", "/v1/agent/report", {}),
        ("GET", "/v1/agent/profile", profile_query),
        ("POST", "/v1/agent/profile/blobs", profile_query),
        ("GET", "/v1/agent/profile/wait", {**profile_query, "after": "2"}),
        ("POST", "/v1/agent/profile", profile_query),
    ]
    for _, _, _, headers, body in fleet.requests:
        assert headers["Authorization"] == "Bearer tok"
        assert headers["Accept"] == "application/json"
        assert (headers.get("Content-Type") == "application/json") == bool(body)
    bodies = [json.loads(body) if body else None for *_, body in fleet.requests]
    # As the fleet parses them (its request models refuse unknown fields).
    beat = AgentHeartbeat.model_validate(bodies[0])
    assert (beat.environment_id, beat.sessions, beat.agent_version) == ("e-abc123", 2, "1.2.3")
    # A report carries only what it reports: what is left out stays as the fleet has it.
    assert list(bodies[1]) == ["environmentId", "setup"]
    assert AgentReport.model_validate(bodies[1]).setup == [item]
    assert list(bodies[2]) == ["environmentId", "sync"]
    assert AgentReport.model_validate(bodies[2]).sync == SyncStatus(version=3, synced_at=T0)
    assert bodies[3] is None and bodies[5] is None
    assert BlobRequest.model_validate(bodies[4]).sha256 == [AA, BB]
    assert ProfileUpload.model_validate(bodies[6]) == upload


async def test_an_answer_that_is_not_the_model_is_a_fleet_error_saying_so(
    recording: tuple[RecordingFleet, AgentFleet],
) -> None:
    fleet, client = recording
    fleet.answers["/v1/agent/heartbeat"] = (200, {"interval": 5})
    with pytest.raises(FleetError, match="not a HeartbeatAck: intervalSeconds: required"):
        await client.heartbeat(sessions=0, agent_version="1", within=5)
    fleet.answers["/v1/agent/profile/wait"] = (200, [3])
    with pytest.raises(FleetError, match=r"not a ProfileWait: .*JSON object"):
        await client.wait(0)


async def test_a_refusal_reads_back_the_fleets_error_body(
    recording: tuple[RecordingFleet, AgentFleet],
) -> None:
    fleet, client = recording
    refusal = ErrorBody(error=ErrorDetail(code="unauthorized", message="Unknown agent token."))
    fleet.answers["/v1/agent/heartbeat"] = (401, refusal.wire())
    with pytest.raises(FleetError, match="the fleet answered 401: Unknown agent token") as caught:
        await client.heartbeat(sessions=0, agent_version="1", within=5)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_a_blob_batch_is_one_the_fleet_takes():
    from leeward.agent.fleet import BLOB_BATCH
    from leeward_protocol.profile import MAX_BLOBS

    assert BLOB_BATCH <= MAX_BLOBS
