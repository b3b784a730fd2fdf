"""The fleet HTTP client against a small stand-in server: error bodies become one sentence,
and a create lost on the network is retried with the same idempotency key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from leeward.client.api import FleetClient, FleetUnreachable
from leeward.common.errors import FleetError
from leeward_protocol.fleet import CreateDevserver, EnvironmentKind

NOW = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
ENVIRONMENT = {
    "id": "e-1",
    "name": "box",
    "fqdn": "box.north.leeward.test",
    "kind": "devserver",
    "flavor": "small",
    "hardware": {"cpus": 2, "memoryGib": 8},
    "region": "north",
    "state": "provisioning",
    "statusMessage": "placed on north-h1",
    "lifespan": "temporary",
    "createdAt": NOW,
    "updatedAt": NOW,
}


async def test_error_body_message_is_what_the_user_sees(aiohttp_server: AiohttpServer) -> None:
    async def full(request: web.Request) -> web.Response:
        body = {
            "error": {
                "code": "no_capacity",
                "message": "Region north is full; try south.",
                "field": "region",
                "regionsWithRoom": ["south"],
            }
        }
        return web.json_response(body, status=409)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    app = web.Application()
    app.router.add_get("/v1/catalog", full)
    app.router.add_get("/v1/whoami", broken)
    server = await aiohttp_server(app)
    async with FleetClient(str(server.make_url("/")), "token") as fleet:
        with pytest.raises(FleetError) as info:
            await fleet.catalog()
        assert str(info.value) == "Region north is full; try south."
        assert info.value.code == "no_capacity"
        assert info.value.regions_with_room == ["south"]
        with pytest.raises(FleetError, match="failed with HTTP 502: try again"):
            await fleet.whoami()


async def test_create_is_retried_with_the_same_key(aiohttp_server: AiohttpServer) -> None:
    keys: list[str] = []
    bodies: list[Any] = []

    async def create(request: web.Request) -> web.StreamResponse:
        keys.append(request.headers["Idempotency-Key"])
        bodies.append(await request.json())
        assert request.headers["Authorization"] == "Bearer token"
        if len(keys) == 1:  # the connection drops before the answer
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        return web.json_response(ENVIRONMENT, status=202)

    app = web.Application()
    app.router.add_post("/v1/environments", create)
    server = await aiohttp_server(app)
    request = CreateDevserver(kind=EnvironmentKind.DEVSERVER, flavor="small", name="box")
    async with FleetClient(str(server.make_url("/")), "token") as fleet:
        env = await fleet.create(request)
    assert env.name == "box"
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert bodies[0] == {
        "kind": "devserver",
        "flavor": "small",
        "name": "box",
        "lifespan": "temporary",
    }


async def test_nothing_listening_is_unreachable() -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    async with FleetClient(url, "token") as fleet:
        with pytest.raises(FleetUnreachable) as info:
            await fleet.whoami()
    assert str(info.value) == f"Cannot reach the fleet at {url}: is it running? Try `leeward up`."
