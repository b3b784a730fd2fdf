"""The routes of announcements (leeward.fleet.announcements): operators post, edit, withdraw
and list them; users read those that concern them and dismiss them; an environment's agent
reads those that concern its environment, for the SSH login banner."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from leeward.fleet import agents, announcements
from leeward.fleet.api.routing import RouteTable, agent_token, parse, principal, query, reply
from leeward.fleet.errors import Unauthorized
from leeward.fleet.state import FLEET
from leeward_protocol.base import Params, Whole
from leeward_protocol.notify import (
    Announcement,
    AnnouncementList,
    Dismiss,
    EditAnnouncement,
    PostAnnouncement,
)
from leeward_protocol.params import (
    AgentQuery,
)

routes = RouteTable()


class AnnouncementPath(Params):
    id: Whole = Field(description="An announcement's id.")


class AnnouncementsQuery(Params):
    active: bool | None = Field(
        default=None, description="`true`: only those shown now; `false`: only those that are not."
    )


def _id(request: web.Request) -> int:
    return AnnouncementPath.model_validate(dict(request.match_info)).id


@routes.route(
    "POST",
    "/v1/admin/announcements",
    "Post an announcement: Markdown text, a severity, a scope (every list given must match; "
    "none: everyone), when it starts (absent: now) and ends (absent: when withdrawn), and "
    "actions. Every name in the scope must exist.",
    request=PostAnnouncement,
    response=Announcement,
    status=201,
    auth="admin",
)
async def post_announcement(request: web.Request) -> web.Response:
    body: PostAnnouncement = await parse(request, PostAnnouncement)
    fleet = request.app[FLEET]
    async with fleet.store.write() as session:
        made = await announcements.post(
            session, fleet.config, fleet.clock.now(), principal(request).user, body
        )
    return reply(made, 201)


@routes.route(
    "GET",
    "/v1/admin/announcements",
    "Every announcement, newest first (`?active=true`: only those shown now).",
    response=AnnouncementList,
    auth="admin",
    query=AnnouncementsQuery,
)
async def list_announcements(request: web.Request) -> web.Response:
    active = query(request, AnnouncementsQuery).active
    fleet = request.app[FLEET]
    async with fleet.store.read() as session:
        found = await announcements.list_all(session, fleet.clock.now(), active=active)
    return reply(AnnouncementList(announcements=found))


@routes.route(
    "PATCH",
    "/v1/admin/announcements/{id}",
    "Change an announcement: a new text, severity or actions is a new revision (shown again "
    "to those who dismissed it); a new end moves when it ends.",
    request=EditAnnouncement,
    response=Announcement,
    auth="admin",
    path_params=AnnouncementPath,
)
async def edit_announcement(request: web.Request) -> web.Response:
    body: EditAnnouncement = await parse(request, EditAnnouncement)
    fleet = request.app[FLEET]
    async with fleet.store.write() as session:
        edited = await announcements.edit(session, fleet.clock.now(), _id(request), body)
    return reply(edited)


@routes.route(
    "DELETE",
    "/v1/admin/announcements/{id}",
    "Withdraw an announcement now (it is kept, withdrawn, for the record).",
    response=Announcement,
    auth="admin",
    path_params=AnnouncementPath,
)
async def withdraw_announcement(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    async with fleet.store.write() as session:
        withdrawn = await announcements.withdraw(session, fleet.clock.now(), _id(request))
    return reply(withdrawn)


@routes.route(
    "GET",
    "/v1/announcements",
    "The announcements shown now that concern you (through your environments, or by name), "
    "each with whether you dismissed it at its current revision and the environments of yours "
    "it concerns.",
    response=AnnouncementList,
)
async def my_announcements(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    async with fleet.store.read() as session:
        found = await announcements.for_user(
            session, fleet.config, fleet.clock.now(), principal(request).user
        )
    return reply(AnnouncementList(announcements=found))


@routes.route(
    "POST",
    "/v1/announcements/{id}/dismiss",
    "Dismiss an announcement at the revision you were shown: hidden for you until its content "
    "changes.",
    request=Dismiss,
    response=Announcement,
    path_params=AnnouncementPath,
)
async def dismiss_announcement(request: web.Request) -> web.Response:
    body: Dismiss = await parse(request, Dismiss)
    fleet = request.app[FLEET]
    who = principal(request).user
    async with fleet.store.write() as session:
        done = await announcements.dismiss(
            session, fleet.config, fleet.clock.now(), who, _id(request), body.revision
        )
    return reply(done)


@routes.route(
    "GET",
    "/v1/agent/announcements",
    "(`?environment=ID`) The announcements shown now that concern the agent's environment, "
    "for its SSH login banner (bearer: the agent's own token).",
    response=AnnouncementList,
    auth="agent",
    query=AgentQuery,
)
async def agent_announcements(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    env_id = query(request, AgentQuery).environment
    row = await agents.agent_environment(fleet.store, agent_token(request), env_id)
    if row is None:
        raise Unauthorized("Unknown agent token for that environment; the agent was replaced.")
    async with fleet.store.read() as session:
        found = await announcements.for_environment(session, fleet.clock.now(), row)
    return reply(AnnouncementList(announcements=found))
