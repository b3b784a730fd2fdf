"""The routes of environments' agents (bearer: the agent's own token, never a user's): the
heartbeat, what their environment applies (its owner's profile, tracked paths, setup steps),
waiting for profile changes, uploading edits, and reporting setup and sync."""

from __future__ import annotations

import base64

from aiohttp import web

from leeward.fleet import agents
from leeward.fleet.api.routing import RouteTable, agent_token, parse, parse_large, query, reply
from leeward.fleet.errors import Unauthorized
from leeward.fleet.state import FLEET
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import (
    AgentHeartbeat,
    AgentReport,
    HeartbeatAck,
)
from leeward_protocol.params import (
    AgentQuery,
    AgentWaitQuery,
)
from leeward_protocol.profile import (
    AgentProfile,
    BlobRequest,
    Blobs,
    ProfileUpload,
    ProfileWait,
    UploadResult,
)

routes = RouteTable()

REPLACED = "Unknown agent token for that environment; the agent was replaced."


@routes.route(
    "POST",
    "/v1/agent/heartbeat",
    "An environment's agent says it is alive (bearer: the agent's own token).",
    request=AgentHeartbeat,
    response=HeartbeatAck,
    auth="agent",
)
async def heartbeat(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    body: AgentHeartbeat = await parse(request, AgentHeartbeat)
    if not await agents.heartbeat(
        fleet.store, fleet.config, fleet.clock, agent_token(request), body
    ):
        raise Unauthorized(REPLACED)
    return reply(HeartbeatAck(interval_seconds=fleet.config.heartbeat_seconds))


async def _agent(request: web.Request, env_id: str | None = None) -> EnvironmentRow:
    """The environment of the agent that asks: `env_id` (from the body), else
    `?environment=ID`."""
    token = agent_token(request)
    if env_id is None:
        env_id = query(request, AgentQuery).environment
    row = await agents.agent_environment(request.app[FLEET].store, token, env_id)
    if row is None:
        raise Unauthorized(REPLACED)
    return row


@routes.route(
    "GET",
    "/v1/agent/profile",
    "(`?environment=ID`) What an environment applies: its owner's profile, the tracked "
    "paths, the setup steps.",
    response=AgentProfile,
    auth="agent",
    query=AgentQuery,
)
async def agent_profile(request: web.Request) -> web.Response:
    row = await _agent(request)
    fleet = request.app[FLEET]
    return reply(await agents.agent_profile(fleet.config, fleet.profiles, row))


@routes.route(
    "POST",
    "/v1/agent/profile/blobs",
    "(`?environment=ID`) Contents of the owner's profile files, by SHA-256.",
    request=BlobRequest,
    response=Blobs,
    auth="agent",
    query=AgentQuery,
)
async def agent_blobs(request: web.Request) -> web.Response:
    row = await _agent(request)
    body: BlobRequest = await parse(request, BlobRequest)
    if row.owner is None:
        raise Unauthorized("A warm environment has no owner and so no profile.")
    found = await request.app[FLEET].profiles.blobs(row.owner, body.sha256)
    return reply(Blobs(blobs={sha: base64.b64encode(data).decode() for sha, data in found.items()}))


@routes.route(
    "GET",
    "/v1/agent/profile/wait",
    "(`?environment=ID&after=N`) Held until the owner's profile is past `after` (or about "
    "25 s): the latest version.",
    response=ProfileWait,
    auth="agent",
    query=AgentWaitQuery,
)
async def agent_wait(request: web.Request) -> web.Response:
    row = await _agent(request)
    after = query(request, AgentWaitQuery).after
    fleet = request.app[FLEET]
    if row.owner is None:
        return reply(ProfileWait(version=0))
    seconds = fleet.config.profile_store.wait_seconds
    return reply(ProfileWait(version=await fleet.profiles.wait(row.owner, after, seconds)))


@routes.route(
    "POST",
    "/v1/agent/profile",
    "(`?environment=ID`) An environment's edits to tracked files: stored in one version, "
    "except refusals and conflicts (files someone else changed first), which are reported.",
    request=ProfileUpload,
    response=UploadResult,
    auth="agent",
    query=AgentQuery,
)
async def agent_upload(request: web.Request) -> web.Response:
    row = await _agent(request)
    if row.owner is None:
        raise Unauthorized("A warm environment has no owner and so no profile.")
    body = await parse_large(request, ProfileUpload)
    profiles = request.app[FLEET].profiles
    return reply(await profiles.upload(row.owner, body, row.name, check_base=True))


@routes.route(
    "POST",
    "/v1/agent/report",
    "An environment's setup items and profile sync status, as they change.",
    request=AgentReport,
    status=204,
    auth="agent",
)
async def agent_report(request: web.Request) -> web.Response:
    body = await parse_large(request, AgentReport)  # every setup step's log tail: over 64 KiB
    row = await _agent(request, body.environment_id)
    fleet = request.app[FLEET]
    await agents.report(fleet.store, fleet.clock, row, body, fleet.config)
    return web.Response(status=204)
