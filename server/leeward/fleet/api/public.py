"""The routes anyone may call, without a token: health, metrics, this API's OpenAPI document,
and the SSH CAs' public keys."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from leeward import __version__
from leeward.fleet.api.openapi import openapi_document
from leeward.fleet.api.routing import TABLE, RouteTable, reply
from leeward.fleet.state import FLEET, METRICS
from leeward_protocol.fleet import Health, SSHAuthorities

routes = RouteTable()


@routes.route(
    "GET", "/healthz", "Liveness and readiness: the database answers.", response=Health, auth="none"
)
async def healthz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    status = "ok"
    try:
        async with fleet.store.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        status = "degraded"
    body = Health(
        status="ok" if status == "ok" else "degraded",
        version=__version__,
        database=fleet.store.dialect,
        provider=fleet.provider.name,
    )
    return reply(body, 200 if status == "ok" else 503)


@routes.route("GET", "/metrics", "Prometheus metrics (text exposition format).", auth="none")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = await request.app[METRICS].render(request.app[FLEET].store)
    response = web.Response(body=body)
    response.content_type = content_type.split(";")[0]
    return response


@routes.route("GET", "/v1/openapi.json", "This API's OpenAPI 3.1 document.", auth="none")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[TABLE]))


@routes.route(
    "GET", "/v1/ssh/authorities", "The SSH CAs' public keys.", response=SSHAuthorities, auth="none"
)
async def authorities(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(
        SSHAuthorities(
            zone=fleet.config.zone,
            host_ca=fleet.authority.host_ca_public,
            user_ca=fleet.authority.user_ca_public,
        )
    )
