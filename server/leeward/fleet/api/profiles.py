"""The routes of a user's profile: read it (or an older version, or one file), its history,
upload files, store config.toml, restore a kept version."""

from __future__ import annotations

from aiohttp import web

from leeward.common.profilefiles import check_path
from leeward.fleet.api.routing import RouteTable, parse, parse_large, principal, query, reply
from leeward.fleet.errors import Invalid
from leeward.fleet.state import FLEET
from leeward_protocol.profile import (
    HistoryQuery,
    Profile,
    ProfileFilePath,
    ProfileHistory,
    ProfileQuery,
    ProfileUpload,
    RestoreProfile,
    UploadResult,
)
from leeward_protocol.userconfig import UserConfig

routes = RouteTable()


@routes.route(
    "GET",
    "/v1/profile",
    "Your profile: its files and config.toml (`?version=N` for an older version).",
    response=Profile,
    query=ProfileQuery,
)
async def get_profile(request: web.Request) -> web.Response:
    who = principal(request)
    version = query(request, ProfileQuery).version
    return reply(await request.app[FLEET].profiles.profile(who.user, version))


@routes.route(
    "GET",
    "/v1/profile/history",
    "Your profile's versions, newest first (`?path=P`: those that changed P).",
    response=ProfileHistory,
    query=HistoryQuery,
)
async def profile_history(request: web.Request) -> web.Response:
    who = principal(request)
    path = query(request, HistoryQuery).path
    return reply(await request.app[FLEET].profiles.history(who.user, path))


@routes.route(
    "GET",
    "/v1/profile/files/{path:.+}",
    "One file of your profile, as stored (`?version=N` for an older version); its metadata "
    "is in the X-Leeward-* headers.",
    query=ProfileQuery,
    media_type="application/octet-stream",
    path_params=ProfileFilePath,
)
async def profile_file(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    path = request.match_info["path"]
    bad = check_path(path)
    if bad is not None:
        raise Invalid(bad.reason, field="path")
    version = query(request, ProfileQuery).version
    meta, content = await request.app[FLEET].profiles.read_file(who.user, path, version)
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


@routes.route(
    "POST",
    "/v1/profile/files",
    "Store files in your profile (from `leeward profile push` or your dotfiles directory).",
    request=ProfileUpload,
    response=UploadResult,
)
async def upload_profile(request: web.Request) -> web.Response:
    who = principal(request)
    body = await parse_large(request, ProfileUpload)
    source = body.source or "cli"
    result = await request.app[FLEET].profiles.upload(who.user, body, source, check_base=False)
    return reply(result)


@routes.route(
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


@routes.route(
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
