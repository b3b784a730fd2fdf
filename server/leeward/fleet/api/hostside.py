"""The routes of host agents (bearer: the host's own token, which speaks for that host only):
the heartbeat that registers a host and keeps it reachable, and the records of its own
environments. And the admins' routes of hosts and the network: a host's token, a region's links
cut and restored."""

from __future__ import annotations

from aiohttp import web

from leeward.fleet import hostlink, network
from leeward.fleet.api.routing import RouteTable, parse, parse_optional, reply
from leeward.fleet.state import FLEET
from leeward_protocol.fleet import (
    CreateHostToken,
    HostTokenIssued,
    RegionLinks,
    RegionPath,
)
from leeward_protocol.host import HostAck, HostRecords, HostStatus
from leeward_protocol.params import (
    HostPath,
)

routes = RouteTable()


@routes.route(
    "POST",
    "/v1/hosts/{name}/heartbeat",
    "A host agent says it is alive, where its API is and what it has (bearer: the host's "
    "token). The first one registers it; one missed for three intervals makes it unreachable.",
    request=HostStatus,
    response=HostAck,
    auth="host",
    path_params=HostPath,
)
async def host_heartbeat(request: web.Request) -> web.Response:
    body: HostStatus = await parse(request, HostStatus)
    return reply(await hostlink.heartbeat(request.app[FLEET], request.match_info["name"], body))


@routes.route(
    "GET",
    "/v1/hosts/{name}/environments",
    "The fleet's records of the live environments placed on this host (bearer: the host's "
    "token; another host's records are refused).",
    response=HostRecords,
    auth="host",
    path_params=HostPath,
)
async def host_environments(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(await hostlink.records(fleet.store, request.match_info["name"]))


@routes.route(
    "POST",
    "/v1/admin/hosts/{name}/token",
    "Issue host NAME's agent a token (the previous one stops working), with the fleet's "
    "public command key, which the host pins: both go into its host.toml. Shown once.",
    request=CreateHostToken,
    response=HostTokenIssued,
    status=201,
    auth="admin",
    path_params=HostPath,
    body_required=False,
)
async def issue_host_token(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    body: CreateHostToken = await parse_optional(request, CreateHostToken)
    issued = await hostlink.issue_host_token(
        fleet.store, request.match_info["name"], fleet.clock.now(), hours=body.hours
    )
    return reply(
        HostTokenIssued(
            host=issued.host,
            token=issued.token,
            expires_at=issued.expires_at,
            fleet_key=issued.fleet_key,
            fleet_url=fleet.public_url or "",
        ),
        201,
    )


@routes.route(
    "POST",
    "/v1/admin/regions/{name}/cut",
    "Cut every link of the region's hosts (a storm, for exercises): its environments are "
    "unreachable at the network layer, and nothing inside them is told. 409 where the fleet's "
    "network is loopback addresses.",
    response=RegionLinks,
    auth="admin",
    path_params=RegionPath,
    body_required=False,
)
async def cut_region(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await network.cut_region(request.app[FLEET], name)
    return reply(RegionLinks(region=name, cut=True))


@routes.route(
    "POST",
    "/v1/admin/regions/{name}/restore",
    "Restore the region's links and every route to its environments.",
    response=RegionLinks,
    auth="admin",
    path_params=RegionPath,
    body_required=False,
)
async def restore_region(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await network.cut_region(request.app[FLEET], name, restore=True)
    return reply(RegionLinks(region=name, cut=False))
