"""The routes of backups, restores, moves and decommissions (leeward.fleet.backups, .moves and
.decommission): a user's own devservers' backups and moves, and the operators' decommissions."""

from __future__ import annotations

from aiohttp import web

from leeward.fleet import backup_views, backups, decommission, moves
from leeward.fleet.api.routing import RouteTable, parse, principal, query, reply
from leeward.fleet.state import FLEET
from leeward_protocol.backup import (
    Backup,
    BackupDetail,
    BackupFiles,
    BackupList,
    BackupRef,
    BackupSchedule,
    DecommissionHost,
    HostDetail,
    Move,
    MovePath,
    MoveRequest,
    Restore,
    RestoreRequest,
)
from leeward_protocol.fleet import (
    BackupStatus,
)
from leeward_protocol.params import (
    EnvironmentPath,
    HostPath,
)

routes = RouteTable()


@routes.route(
    "GET",
    "/v1/environments/{ref}/backups",
    "A devserver's backups, newest first, and their status at a glance. A deleted devserver's "
    "are listed too (by its id, or the name it last had) while the fleet keeps them.",
    response=BackupList,
    path_params=EnvironmentPath,
)
async def list_backups(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    ref = request.match_info["ref"]
    return reply(await backup_views.list_backups(fleet, principal(request), ref))


@routes.route(
    "POST",
    "/v1/environments/{ref}/backups",
    "Back a running devserver up now. 202: the backup, `running` (poll the list); the one "
    "already running if there is one.",
    response=Backup,
    status=202,
    body_required=False,
    path_params=EnvironmentPath,
)
async def back_up(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    ref = request.match_info["ref"]
    return reply(await backups.back_up(fleet, principal(request), ref), 202)


@routes.route(
    "GET",
    "/v1/environments/{ref}/backups/{backup}",
    "One backup, and what it holds in a directory (`path`, relative to the home; one level).",
    response=BackupDetail,
    path_params=BackupRef,
    query=BackupFiles,
)
async def show_backup(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    where = BackupRef.model_validate(dict(request.match_info))
    path = query(request, BackupFiles).path
    detail = await backup_views.show_backup(
        fleet, principal(request), where.ref, where.backup, path
    )
    return reply(detail)


@routes.route(
    "PUT",
    "/v1/environments/{ref}/backup-schedule",
    "How often a devserver is backed up (null: the fleet's default).",
    request=BackupSchedule,
    response=BackupStatus,
    path_params=EnvironmentPath,
)
async def set_schedule(request: web.Request) -> web.Response:
    body: BackupSchedule = await parse(request, BackupSchedule)
    fleet = request.app[FLEET]
    ref = request.match_info["ref"]
    status = await backup_views.set_schedule(fleet, principal(request), ref, body.interval_minutes)
    return reply(status)


@routes.route(
    "POST",
    "/v1/environments/{ref}/restore",
    "Restore a backup: into a new devserver (`to`: the answer names it while it is being made; "
    "follow it as any new environment), or some `paths` into the running devserver itself "
    "(written under `~/.leeward-restore/SNAPSHOT/`, nothing overwritten; done when answered).",
    request=RestoreRequest,
    response=Restore,
    path_params=EnvironmentPath,
)
async def restore(request: web.Request) -> web.Response:
    body: RestoreRequest = await parse(request, RestoreRequest)
    fleet = request.app[FLEET]
    return reply(await moves.restore(fleet, principal(request), request.match_info["ref"], body))


@routes.route(
    "POST",
    "/v1/environments/{ref}/move",
    "Move a running devserver cold to another flavor and/or region: a final backup, a new "
    "devserver restored from it, the name handed over once it answers over SSH, the old one "
    "deleted. 202: the move (poll `/v1/moves/{id}`); a failure leaves the old one as it was.",
    request=MoveRequest,
    response=Move,
    status=202,
    path_params=EnvironmentPath,
)
async def move(request: web.Request) -> web.Response:
    body: MoveRequest = await parse(request, MoveRequest)
    fleet = request.app[FLEET]
    started = await moves.start_move(fleet, principal(request), request.match_info["ref"], body)
    return reply(started, 202)


@routes.route(
    "GET",
    "/v1/moves/{id}",
    "A move, at its current stage.",
    response=Move,
    path_params=MovePath,
)
async def get_move(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(await moves.get_move(fleet, principal(request), request.match_info["id"]))


@routes.route(
    "GET",
    "/v1/admin/hosts/{name}",
    "A host, what lives on it, and how its decommission goes.",
    response=HostDetail,
    auth="admin",
    path_params=HostPath,
)
async def host_detail(request: web.Request) -> web.Response:
    return reply(await decommission.detail(request.app[FLEET], request.match_info["name"]))


@routes.route(
    "POST",
    "/v1/admin/hosts/{name}/decommission",
    "Decommission a host by a deadline: closed to new placements, owners told, devservers "
    "moved off (live within the region where there is room, otherwise cold), containers "
    "expire by the deadline, then the host is retired. Resumable across fleet restarts.",
    request=DecommissionHost,
    response=HostDetail,
    status=202,
    auth="admin",
    path_params=HostPath,
)
async def decommission_host(request: web.Request) -> web.Response:
    body: DecommissionHost = await parse(request, DecommissionHost)
    fleet = request.app[FLEET]
    return reply(await decommission.decommission(fleet, request.match_info["name"], body), 202)
