"""The routes of a user's own business: who they are, the catalog and the features, their SSH
certificate, and their environments (list, create, read, delete, extend, start after an idle
stop, and the event stream of their changes)."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp_sse import sse_response

from leeward.fleet import idle, lifecycle, ownership
from leeward.fleet.api.routing import RouteTable, headers, parse, principal, query, reply
from leeward.fleet.catalog import current_catalog
from leeward.fleet.create import create
from leeward.fleet.dns import DNS
from leeward.fleet.errors import Forbidden, Invalid
from leeward.fleet.events import READ_LIMIT
from leeward.fleet.state import CREATES, FLEET, STREAMS
from leeward_protocol.fleet import (
    Catalog,
    Certificate,
    CertificateRequest,
    CreateEnvironment,
    Environment,
    EnvironmentList,
    ExtendEnvironment,
    FleetEvent,
    WhoAmI,
)
from leeward_protocol.params import (
    CreateHeaders,
    EnvironmentPath,
    EventsHeaders,
    EventsQuery,
    ListQuery,
)
from leeward_protocol.profile import Feature, FeatureList

routes = RouteTable()


@routes.route("GET", "/v1/whoami", "Who the token belongs to.", response=WhoAmI)
async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    return reply(WhoAmI(user=who.user, role=who.role))


@routes.route(
    "GET",
    "/v1/catalog",
    "Regions with free capacity, flavors, profiles, lifespans.",
    response=Catalog,
)
async def catalog(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    body = await current_catalog(fleet.store, fleet.config, fleet.region_probes)
    body.dns = request.app[DNS].address
    return reply(body)


@routes.route(
    "GET",
    "/v1/features",
    "The features users can name in their config.toml (installed in each new environment).",
    response=FeatureList,
)
async def features(request: web.Request) -> web.Response:
    catalog = request.app[FLEET].config.features
    return reply(
        FeatureList(
            features=[
                Feature(
                    name=f.name,
                    description=f.description,
                    kinds=list(f.kinds),
                    files=sorted(f.files),
                )
                for f in catalog
            ]
        )
    )


@routes.route(
    "POST",
    "/v1/ssh/certificate",
    "Sign the caller's SSH public key: a user certificate (16 h at most) for their name.",
    request=CertificateRequest,
    response=Certificate,
)
async def certificate(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    body: CertificateRequest = await parse(request, CertificateRequest)
    who = principal(request)
    limit = fleet.config.auth.user_certificate_hours
    hours = body.hours if body.hours is not None else limit
    if not 1 <= hours <= limit:
        raise Invalid(f"hours: must be between 1 and {limit}.", field="hours")
    try:
        cert, after, before = fleet.authority.sign_user_key(
            body.public_key, who.user, fleet.clock.now(), hours
        )
    except ValueError as exc:
        raise Invalid(f"publicKey: {exc}", field="publicKey") from None
    return reply(
        Certificate(certificate=cert, principals=[who.user], valid_after=after, valid_before=before)
    )


@routes.route(
    "GET",
    "/v1/environments",
    "The caller's environments (admins: `?all=true` for everyone's).",
    response=EnvironmentList,
    query=ListQuery,
)
async def list_environments(request: web.Request) -> web.Response:
    everyone = query(request, ListQuery).all
    if everyone and not principal(request).is_admin:
        raise Forbidden("Only admins can list everyone's environments.")
    fleet = request.app[FLEET]
    envs = await ownership.list_environments(
        fleet.store, fleet.config.zone, principal(request), everyone=everyone
    )
    return reply(EnvironmentList(environments=envs))


@routes.route(
    "GET",
    "/v1/events",
    "Every change to the caller's environments as Server-Sent Events (`text/event-stream`), "
    "each a FleetEvent whose SSE id is its `id`. Reconnect with `Last-Event-ID` (or "
    "`?after=ID`) to get every later event once. A `reset` event (always first when no id is "
    "given, or when the id is no longer kept) means: list the environments again, then go on "
    "from its id. Admins: `?all=true` for everyone's.",
    response=FleetEvent,
    query=EventsQuery,
    headers=EventsHeaders,
    media_type="text/event-stream",
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    asked = query(request, EventsQuery)
    everyone = asked.all
    if everyone and not who.is_admin:
        raise Forbidden("Only admins can follow everyone's events.")
    last = headers(request, EventsHeaders).last_event_id
    after = last if last is not None else asked.after
    events = request.app[FLEET].events
    owner = None if everyone else who.user
    streams = request.app[STREAMS].open
    if request.transport is None:
        # The client left before its stream began (aiohttp-sse asserts on a closed transport).
        return web.Response(status=204)
    async with sse_response(request, ping_interval=15) as stream:
        streams.add(stream)
        try:
            if after is None or not await events.resumable(after):
                head = await events.head()
                await stream.send(_sse(events.reset(head)), id=str(head), event="reset")
                after = head
            while stream.is_connected() and not events.closed:
                batch = await events.read_after(after, owner)
                for event in batch:
                    await stream.send(_sse(event), id=str(event.id), event=event.type.value)
                    after = event.id
                if len(batch) < READ_LIMIT:
                    await events.wait(request.app[FLEET].config.event_poll_seconds)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            streams.discard(stream)
    return stream


def _sse(event: FleetEvent) -> str:
    return json.dumps(event.model_dump(mode="json", by_alias=True), separators=(",", ":"))


@routes.route(
    "POST",
    "/v1/environments",
    "Create a devserver or claim a container. Send an `Idempotency-Key` header to retry safely. "
    "202 while it is being made (poll it), 201 when it is ready at once (a warm container), "
    "200 when the key was seen before.",
    request=CreateEnvironment,
    response=Environment,
    status=202,
    headers=CreateHeaders,
)
async def create_environment(request: web.Request) -> web.Response:
    key = headers(request, CreateHeaders).idempotency_key
    body = await parse(request, CreateEnvironment)
    outcome = await create(request.app[CREATES], principal(request), body, key)
    if not outcome.created:
        status = 200
    elif outcome.environment.state == "running":
        status = 201
    else:
        status = 202
    return reply(outcome.environment, status)


@routes.route(
    "GET",
    "/v1/environments/{ref}",
    "One environment, by id or name.",
    response=Environment,
    path_params=EnvironmentPath,
)
async def get_environment(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(
        await ownership.get_environment(
            fleet.store, fleet.config.zone, principal(request), request.match_info["ref"]
        )
    )


@routes.route(
    "DELETE",
    "/v1/environments/{ref}",
    "Delete an environment; its disk is destroyed.",
    response=Environment,
    status=202,
    path_params=EnvironmentPath,
)
async def delete_environment(request: web.Request) -> web.Response:
    env = await lifecycle.delete(request.app[FLEET], principal(request), request.match_info["ref"])
    return reply(env, 202)


@routes.route(
    "POST",
    "/v1/environments/{ref}/extend",
    "Push a temporary environment's expiry back.",
    request=ExtendEnvironment,
    response=Environment,
    path_params=EnvironmentPath,
)
async def extend_environment(request: web.Request) -> web.Response:
    body: ExtendEnvironment = await parse(request, ExtendEnvironment)
    fleet = request.app[FLEET]
    env = await lifecycle.extend(
        fleet.store,
        fleet.config,
        fleet.clock.now(),
        principal(request),
        request.match_info["ref"],
        body.hours,
    )
    return reply(env)


@routes.route(
    "POST",
    "/v1/environments/{ref}/start",
    "Start an environment stopped for being idle again, on its host with its home (`leeward "
    "start`; `ssh` to it does the same). 202: it is starting (poll it until `running`); one "
    "already starting or running is answered as it is.",
    response=Environment,
    status=202,
    body_required=False,
    path_params=EnvironmentPath,
)
async def start_environment(request: web.Request) -> web.Response:
    env, _ = await idle.start_again(
        request.app[FLEET], principal(request), request.match_info["ref"]
    )
    return reply(env, 202)
