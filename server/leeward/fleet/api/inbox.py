"""`GET /v1/inbox`: what the editor shows a user (leeward.fleet.inbox), long-polled."""

from __future__ import annotations

from aiohttp import web

from leeward.fleet import inbox
from leeward.fleet.api.routing import RouteTable, principal, query, reply
from leeward.fleet.state import FLEET
from leeward_protocol.notify import Inbox, InboxQuery

routes = RouteTable()


@routes.route(
    "GET",
    "/v1/inbox",
    "The announcements that concern you (dismissed ones flagged) and your notifications not "
    "yet seen, newer than `after`. With `waitSeconds`, it waits while there is nothing newer "
    "and the announcements' digest is still `digest` (a long poll), and answers early when "
    "either changes or a scheduled announcement starts or ends.",
    response=Inbox,
    query=InboxQuery,
)
async def get_inbox(request: web.Request) -> web.Response:
    who = principal(request)
    asked = query(request, InboxQuery)
    return reply(await inbox.wait_for_news(request.app[FLEET], who.user, asked))
