"""The profile API: users read, upload and restore their profile and store their config.toml;
agents fetch what their environment applies, follow changes, upload edits and report their
setup and sync. Registered in `leeward.fleet.routes.ROUTES` like every other route."""

from __future__ import annotations

import base64

from aiohttp import web

from leeward.common.profilefiles import check_path
from leeward.fleet import agents
from leeward.fleet.errors import BadRequest, Invalid, TooLarge, Unauthorized
from leeward.fleet.routes import agent_token, parse, principal, reply, route
from leeward.fleet.state import FLEET
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import AgentReport
from leeward_protocol.profile import (
    AgentProfile,
    BlobRequest,
    Blobs,
    Profile,
    ProfileHistory,
    ProfileUpload,
    ProfileWait,
    RestoreProfile,
    UploadResult,
)
from leeward_protocol.userconfig import UserConfig

USER_SOURCES = ("cli", "dotfiles")


def _version(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise Invalid(
            "version: must be a whole number (see `leeward profile history`).", field="version"
        )
    return int(raw)


async def _large(request: web.Request, model: object) -> object:
    """Parse a body that may be larger than the API's usual limit (profile uploads)."""
    limit = request.app[FLEET].config.profile_store.max_upload_bytes
    try:
        return await parse(request.clone(client_max_size=limit), model)
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(
            f"The upload is over {limit} bytes; send the files in several uploads."
        ) from None


# ------------------------------------------------------------------------------ users


@route(
    "GET",
    "/v1/profile",
    "Your profile: its files and config.toml (`?version=N` for an older version).",
    response=Profile,
)
async def get_profile(request: web.Request) -> web.Response:
    who = principal(request)
    return reply(await request.app[FLEET].profiles.profile(who.user, _version(request)))


@route(
    "GET",
    "/v1/profile/history",
    "Your profile's versions, newest first (`?path=P`: those that changed P).",
    response=ProfileHistory,
)
async def profile_history(request: web.Request) -> web.Response:
    who = principal(request)
    path = request.query.get("path") or None
    return reply(await request.app[FLEET].profiles.history(who.user, path))


@route(
    "GET",
    "/v1/profile/files/{path:.+}",
    "One file of your profile, as stored (`?version=N` for an older version); its metadata "
    "is in the X-Leeward-* headers.",
)
async def profile_file(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    path = request.match_info["path"]
    bad = check_path(path)
    if bad is not None:
        raise Invalid(bad.reason, field="path")
    meta, content = await request.app[FLEET].profiles.read_file(who.user, path, _version(request))
    return web.Response(
        body=content,
        content_type="application/octet-stream",
        headers={
            "X-Leeward-Sha256": meta.sha256,
            "X-Leeward-Mode": oct(meta.mode),
            "X-Leeward-Version": str(meta.version),
            "X-Leeward-Source": meta.source,
        },
    )


@route(
    "POST",
    "/v1/profile/files",
    "Store files in your profile (from `leeward profile push` or your dotfiles directory).",
    request=ProfileUpload,
    response=UploadResult,
)
async def upload_profile(request: web.Request) -> web.Response:
    who = principal(request)
    body = await _large(request, ProfileUpload)
    assert isinstance(body, ProfileUpload)
    source = body.source or "cli"
    if source not in USER_SOURCES:
        raise Invalid(f"source: must be one of {', '.join(USER_SOURCES)}.", field="source")
    result = await request.app[FLEET].profiles.upload(who.user, body, source, check_base=False)
    return reply(result)


@route(
    "PUT",
    "/v1/profile/config",
    "Store your config.toml (validated) in your profile; new environments follow it.",
    request=UserConfig,
    response=Profile,
)
async def put_profile_config(request: web.Request) -> web.Response:
    who = principal(request)
    config: UserConfig = await parse(request, UserConfig)
    return reply(await request.app[FLEET].profiles.set_config(who.user, config))


@route(
    "POST",
    "/v1/profile/restore",
    "Make a kept version (or some of its files) the latest again; history keeps what it replaces.",
    request=RestoreProfile,
    response=Profile,
)
async def restore_profile(request: web.Request) -> web.Response:
    who = principal(request)
    body: RestoreProfile = await parse(request, RestoreProfile)
    profiles = request.app[FLEET].profiles
    return reply(await profiles.restore(who.user, body.version, body.paths))


# ------------------------------------------------------------------------------ agents


async def _agent(request: web.Request, environment_id: str | None = None) -> EnvironmentRow:
    token = agent_token(request)
    env_id = environment_id or request.query.get("environment")
    if not env_id:
        raise BadRequest("Name the environment: `?environment=ID`.")
    row = await agents.agent_environment(request.app[FLEET].store, token, env_id)
    if row is None:
        raise Unauthorized("Unknown agent token for that environment; the agent was replaced.")
    return row


@route(
    "GET",
    "/v1/agent/profile",
    "(`?environment=ID`) What an environment applies: its owner's profile, the tracked "
    "paths, the setup steps.",
    response=AgentProfile,
    auth="agent",
)
async def agent_profile(request: web.Request) -> web.Response:
    row = await _agent(request)
    fleet = request.app[FLEET]
    return reply(await agents.agent_profile(fleet.config, fleet.profiles, row))


@route(
    "POST",
    "/v1/agent/profile/blobs",
    "(`?environment=ID`) Contents of the owner's profile files, by SHA-256.",
    request=BlobRequest,
    response=Blobs,
    auth="agent",
)
async def agent_blobs(request: web.Request) -> web.Response:
    row = await _agent(request)
    body: BlobRequest = await parse(request, BlobRequest)
    if row.owner is None:
        raise Unauthorized("A warm environment has no owner and so no profile.")
    found = await request.app[FLEET].profiles.blobs(row.owner, body.sha256)
    return reply(Blobs(blobs={sha: base64.b64encode(data).decode() for sha, data in found.items()}))


@route(
    "GET",
    "/v1/agent/profile/wait",
    "(`?environment=ID&after=N`) Held until the owner's profile is past `after` (or about "
    "25 s): the latest version.",
    response=ProfileWait,
    auth="agent",
)
async def agent_wait(request: web.Request) -> web.Response:
    row = await _agent(request)
    raw = request.query.get("after", "0")
    if not raw.isdigit():
        raise Invalid("after: must be a whole number.", field="after")
    fleet = request.app[FLEET]
    if row.owner is None:
        return reply(ProfileWait(version=0))
    seconds = fleet.config.profile_store.wait_seconds
    return reply(ProfileWait(version=await fleet.profiles.wait(row.owner, int(raw), seconds)))


@route(
    "POST",
    "/v1/agent/profile",
    "(`?environment=ID`) An environment's edits to tracked files: stored in one version, "
    "except refusals and conflicts (files someone else changed first), which are reported.",
    request=ProfileUpload,
    response=UploadResult,
    auth="agent",
)
async def agent_upload(request: web.Request) -> web.Response:
    row = await _agent(request)
    if row.owner is None:
        raise Unauthorized("A warm environment has no owner and so no profile.")
    body = await _large(request, ProfileUpload)
    assert isinstance(body, ProfileUpload)
    profiles = request.app[FLEET].profiles
    return reply(await profiles.upload(row.owner, body, row.name, check_base=True))


@route(
    "POST",
    "/v1/agent/report",
    "An environment's setup items and profile sync status, as they change.",
    request=AgentReport,
    status=204,
    auth="agent",
)
async def agent_report(request: web.Request) -> web.Response:
    body = await _large(request, AgentReport)  # every setup step's log tail: over 64 KiB
    assert isinstance(body, AgentReport)
    row = await _agent(request, body.environment_id)
    fleet = request.app[FLEET]
    await agents.report(fleet.store, fleet.clock, row, body)
    return web.Response(status=204)
