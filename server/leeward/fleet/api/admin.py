"""The operators' routes (admin tokens only): hosts and their drains, moving an environment,
users and tokens, and the zone's DNS server for exercises."""

from __future__ import annotations

from aiohttp import web

from leeward.fleet import admin, migration
from leeward.fleet.api.routing import RouteTable, parse, parse_optional, principal, reply
from leeward.fleet.dns import DNS
from leeward.fleet.errors import NotFound, Unavailable
from leeward.fleet.hosts import list_hosts, set_host_state
from leeward.fleet.state import FLEET
from leeward_protocol.dns import (
    DnsStatus,
    StopDns,
)
from leeward_protocol.fleet import (
    CreateToken,
    CreateUser,
    Environment,
    Host,
    HostList,
    HostState,
    MigrateEnvironment,
    Token,
    User,
)
from leeward_protocol.params import (
    EnvironmentPath,
    HostPath,
)

routes = RouteTable()


@routes.route(
    "GET",
    "/v1/admin/hosts",
    "Every host with its capacity, usage and state.",
    response=HostList,
    auth="admin",
)
async def hosts(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(HostList(hosts=[Host(**vars(h)) for h in await list_hosts(fleet.store)]))


async def _host(request: web.Request, name: str) -> Host:
    for usage in await list_hosts(request.app[FLEET].store):
        if usage.name == name:
            return Host(**vars(usage))
    raise NotFound(f"No host {name!r}: GET /v1/admin/hosts lists them.")


@routes.route(
    "POST",
    "/v1/admin/hosts/{name}/drain",
    "Drain a host: nothing new is placed on it, every environment on it moves live to another "
    "active host of its region (the drain coordinator), then it is in `maintenance`. 202: the "
    "host, `draining`; poll it, or follow the environments' events (`migrating`, `running`).",
    response=Host,
    status=202,
    auth="admin",
    path_params=HostPath,
)
async def drain_host(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await migration.drain_host(request.app[FLEET], name)
    return reply(await _host(request, name), 202)


@routes.route(
    "POST",
    "/v1/admin/hosts/{name}/activate",
    "Put a host back into service (after maintenance, or to stop a drain).",
    response=Host,
    auth="admin",
    path_params=HostPath,
)
async def activate_host(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    fleet = request.app[FLEET]
    await set_host_state(fleet.store, name, HostState.ACTIVE, fleet.clock.now())
    return reply(await _host(request, name))


@routes.route(
    "POST",
    "/v1/admin/environments/{ref}/migrate",
    "Move one environment live to another host of its region (`host`, or the one with most "
    "room). 202: it is `migrating` (`host` the new one, `migratingFrom` the old).",
    request=MigrateEnvironment,
    response=Environment,
    status=202,
    auth="admin",
    body_required=False,
    path_params=EnvironmentPath,
)
async def migrate_environment(request: web.Request) -> web.Response:
    body = await parse_optional(request, MigrateEnvironment)
    env = await migration.migrate(
        request.app[FLEET], principal(request), request.match_info["ref"], body.host
    )
    return reply(env, 202)


@routes.route(
    "POST",
    "/v1/admin/users",
    "Create a user (idempotent).",
    request=CreateUser,
    response=User,
    status=201,
    auth="admin",
)
async def create_user(request: web.Request) -> web.Response:
    body: CreateUser = await parse(request, CreateUser)
    fleet = request.app[FLEET]
    return reply(await admin.create_user(fleet.store, fleet.clock.now(), body), 201)


@routes.route(
    "POST",
    "/v1/admin/tokens",
    "Issue a token for a user; the secret is shown once.",
    request=CreateToken,
    response=Token,
    status=201,
    auth="admin",
)
async def create_token(request: web.Request) -> web.Response:
    body: CreateToken = await parse(request, CreateToken)
    fleet = request.app[FLEET]
    return reply(await admin.create_token(fleet.store, fleet.clock.now(), body), 201)


@routes.route(
    "GET",
    "/v1/admin/dns",
    "The zone's DNS server: serving, closed or black-hole, and its address.",
    response=DnsStatus,
    auth="admin",
)
async def dns_status(request: web.Request) -> web.Response:
    return reply(request.app[DNS].status())


@routes.route(
    "POST",
    "/v1/admin/dns/stop",
    "Stop the zone's DNS server (exercises): closed, or `blackHole` (open sockets, no answers).",
    request=StopDns,
    response=DnsStatus,
    auth="admin",
    body_required=False,
)
async def dns_stop(request: web.Request) -> web.Response:
    body: StopDns = await parse_optional(request, StopDns)
    await request.app[DNS].stop(black_hole=body.black_hole)
    return reply(request.app[DNS].status())


@routes.route(
    "POST",
    "/v1/admin/dns/start",
    "Start the zone's DNS server again.",
    response=DnsStatus,
    auth="admin",
)
async def dns_start(request: web.Request) -> web.Response:
    server = request.app[DNS]
    try:
        await server.start()
    except OSError as exc:
        raise Unavailable(
            f"The DNS server cannot listen on {server.host}:{server.port}: {exc}."
        ) from None
    return reply(server.status())
