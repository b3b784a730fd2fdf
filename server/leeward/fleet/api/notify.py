"""The routes of notifications (leeward.fleet.notify): a user's own notifications, marking them
seen (the editor's delivery), their preferences; the operators' view of sinks and their pauses,
and setting another user's preferences."""

from __future__ import annotations

from aiohttp import web

from leeward.fleet.api.routing import RouteTable, parse, principal, query, reply
from leeward.fleet.notify import views
from leeward.fleet.state import FLEET
from leeward_protocol.notify import (
    NotificationList,
    NotificationsQuery,
    PauseSink,
    Preferences,
    SeenNotifications,
    SetPreferences,
    SinkList,
    SinkName,
    SinkPath,
    SinkStatus,
    UserPath,
)

routes = RouteTable()


@routes.route(
    "GET",
    "/v1/notifications",
    "Your notifications, newest first, each with its deliveries (sink, state, attempts, "
    "reason); `unseen=true`: only those the editor has not shown.",
    response=NotificationList,
    query=NotificationsQuery,
)
async def list_notifications(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    asked = query(request, NotificationsQuery)
    async with fleet.store.read() as session:
        found = await views.list_notifications(
            session, principal(request).user, unseen=asked.unseen, limit=asked.limit
        )
    return reply(found)


@routes.route(
    "POST",
    "/v1/notifications/seen",
    "The editor showed these notifications: each is marked seen and its editor delivery sent. "
    "Only your own: an id that is not yours refuses the whole request (404).",
    request=SeenNotifications,
    response=NotificationList,
)
async def mark_seen(request: web.Request) -> web.Response:
    body: SeenNotifications = await parse(request, SeenNotifications)
    fleet = request.app[FLEET]
    async with fleet.store.write() as session:
        seen = await views.mark_seen(session, fleet.clock.now(), principal(request).user, body.ids)
    return reply(seen)


@routes.route(
    "GET",
    "/v1/me/notifications",
    "Your notification preferences: your email address and the sinks each kind goes to (your "
    "choice, else the fleet's default).",
    response=Preferences,
)
async def get_preferences(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    async with fleet.store.read() as session:
        found = await views.preferences(session, fleet.config, principal(request).user)
    return reply(found)


@routes.route(
    "PUT",
    "/v1/me/notifications",
    "Replace your notification preferences: your email address, and the sinks of the kinds you "
    "name (the others follow the fleet's defaults; an empty list silences a kind).",
    request=SetPreferences,
    response=Preferences,
)
async def set_preferences(request: web.Request) -> web.Response:
    body: SetPreferences = await parse(request, SetPreferences)
    return reply(await _set(request, principal(request).user, body))


@routes.route(
    "PUT",
    "/v1/admin/users/{user}/notifications",
    "Operators: replace a user's notification preferences.",
    request=SetPreferences,
    response=Preferences,
    auth="admin",
    path_params=UserPath,
)
async def set_user_preferences(request: web.Request) -> web.Response:
    body: SetPreferences = await parse(request, SetPreferences)
    return reply(await _set(request, request.match_info["user"], body))


async def _set(request: web.Request, user: str, body: SetPreferences) -> Preferences:
    fleet = request.app[FLEET]
    async with fleet.store.write() as session:
        return await views.set_preferences(session, fleet.config, fleet.clock.now(), user, body)


@routes.route(
    "GET",
    "/v1/admin/sinks",
    "Operators: every sink, whether it is configured and paused, and its deliveries waiting "
    "and failed.",
    response=SinkList,
    auth="admin",
)
async def list_sinks(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    async with fleet.store.read() as session:
        return reply(await views.sink_statuses(session, fleet.config))


@routes.route(
    "POST",
    "/v1/admin/sinks/{name}",
    "Operators: pause a sink (its deliveries wait, their attempts uncounted) or resume it.",
    request=PauseSink,
    response=SinkStatus,
    auth="admin",
    path_params=SinkPath,
)
async def pause_sink(request: web.Request) -> web.Response:
    body: PauseSink = await parse(request, PauseSink)
    fleet = request.app[FLEET]
    sink = SinkName(request.match_info["name"])
    async with fleet.store.write() as session:
        status = await views.pause_sink(
            session,
            fleet.config,
            fleet.clock.now(),
            principal(request).user,
            sink,
            body.paused,
            body.reason,
        )
    return reply(status)
