"""The fleet's HTTP API under /v1. Handlers are thin: parse with pydantic, call the Fleet, answer.

Every route is declared once in `ROUTES` with its request and response models; the router and
`/v1/openapi.json` are both built from that table, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import text

from leeward import __version__
from leeward.common.validation import first_fault
from leeward.fleet import admin, agents, lifecycle, migration, ownership
from leeward.fleet.auth import Principal
from leeward.fleet.catalog import current_catalog
from leeward.fleet.create import create
from leeward.fleet.dns import DNS
from leeward.fleet.errors import BadRequest, Forbidden, Invalid, NotFound, Unauthorized, Unavailable
from leeward.fleet.events import READ_LIMIT
from leeward.fleet.hosts import list_hosts, set_host_state
from leeward.fleet.state import CREATES, FLEET, METRICS, STREAMS
from leeward_protocol.fleet import (
    AgentHeartbeat,
    Catalog,
    Certificate,
    CertificateRequest,
    CreateEnvironment,
    CreateToken,
    CreateUser,
    DnsStatus,
    Environment,
    EnvironmentList,
    ExtendEnvironment,
    FleetEvent,
    Health,
    HeartbeatAck,
    Host,
    HostList,
    HostState,
    MigrateEnvironment,
    Role,
    SSHAuthorities,
    StopDns,
    Token,
    User,
    WhoAmI,
)
from leeward_protocol.profile import Feature, FeatureList

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: Any = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: str = "user"  # "none", "user", "admin", "agent"


ROUTES: list[Route] = []


def route(
    method: str,
    path: str,
    summary: str,
    *,
    request: Any = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: str = "user",
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, summary, request, response, status, auth))
        return handler

    return register


# ---------------------------------------------------------------------------- helpers


async def parse(request: web.Request, model: Any) -> Any:
    """The body, validated into `model`; a clear 4xx naming the field otherwise."""
    raw = await request.read()
    if not raw:
        raise BadRequest("The request needs a JSON body.")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.") from None
    try:
        return _adapter(model).validate_python(data)
    except ValidationError as exc:
        raise invalid_from(exc) from None


async def parse_optional(request: web.Request, model: Any) -> Any:
    """Like `parse`, but an empty body means the model's defaults."""
    if not await request.read():
        return _adapter(model).validate_python({})
    return await parse(request, model)


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    """Building a TypeAdapter generates its schema: once per model, not once per request."""
    return TypeAdapter(model)


def invalid_from(exc: ValidationError) -> Invalid:
    fault = first_fault(exc)
    return Invalid(fault.sentence("body"), field=fault.field)


def reply(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


PRINCIPAL = web.RequestKey("principal", Principal)


def agent_token(request: web.Request) -> str:
    """The bearer token an agent sent; 401 when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("An agent must send `Authorization: Bearer <agent token>`.")
    return token.strip()


def principal(request: web.Request) -> Principal:
    who = request.get(PRINCIPAL)
    assert isinstance(who, Principal), "route declared without auth"
    return who


# ---------------------------------------------------------------------------- public


@route(
    "GET", "/healthz", "Liveness and readiness: the database answers.", response=Health, auth="none"
)
async def healthz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    status = "ok"
    try:
        async with fleet.store.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        status = "degraded"
    body = Health(
        status="ok" if status == "ok" else "degraded",
        version=__version__,
        database=fleet.store.dialect,
        provider=fleet.provider.name,
    )
    return reply(body, 200 if status == "ok" else 503)


@route("GET", "/metrics", "Prometheus metrics (text exposition format).", auth="none")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = await request.app[METRICS].render(request.app[FLEET].store)
    response = web.Response(body=body)
    response.content_type = content_type.split(";")[0]
    return response


@route("GET", "/v1/openapi.json", "This API's OpenAPI 3.1 document.", auth="none")
async def openapi(request: web.Request) -> web.Response:
    from leeward.fleet.openapi import openapi_document

    return web.json_response(openapi_document())


@route(
    "GET", "/v1/ssh/authorities", "The SSH CAs' public keys.", response=SSHAuthorities, auth="none"
)
async def authorities(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(
        SSHAuthorities(
            zone=fleet.config.zone,
            host_ca=fleet.authority.host_ca_public,
            user_ca=fleet.authority.user_ca_public,
        )
    )


# ---------------------------------------------------------------------------- users


@route("GET", "/v1/whoami", "Who the token belongs to.", response=WhoAmI)
async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    return reply(WhoAmI(user=who.user, role=who.role))


@route(
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


@route(
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


@route(
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


@route(
    "GET",
    "/v1/environments",
    "The caller's environments (admins: `?all=true` for everyone's).",
    response=EnvironmentList,
)
async def list_environments(request: web.Request) -> web.Response:
    everyone = request.query.get("all", "").lower() in ("1", "true", "yes")
    if everyone and not principal(request).is_admin:
        raise Forbidden("Only admins can list everyone's environments.")
    fleet = request.app[FLEET]
    envs = await ownership.list_environments(
        fleet.store, fleet.config.zone, principal(request), everyone=everyone
    )
    return reply(EnvironmentList(environments=envs))


@route(
    "GET",
    "/v1/events",
    "Every change to the caller's environments as Server-Sent Events (`text/event-stream`), "
    "each a FleetEvent whose SSE id is its `id`. Reconnect with `Last-Event-ID` (or "
    "`?after=ID`) to get every later event once. A `reset` event (always first when no id is "
    "given, or when the id is no longer kept) means: list the environments again, then go on "
    "from its id. Admins: `?all=true` for everyone's.",
    response=FleetEvent,
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    everyone = request.query.get("all", "").lower() in ("1", "true", "yes")
    if everyone and not who.is_admin:
        raise Forbidden("Only admins can follow everyone's events.")
    raw = request.headers.get("Last-Event-ID", request.query.get("after"))
    after: int | None = None
    if raw is not None and raw.strip():
        if not raw.strip().isdigit():
            raise Invalid(
                f"Last-Event-ID must be an event id (a number), not {raw[:40]!r}.",
                field="Last-Event-ID",
            )
        after = int(raw)
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


@route(
    "POST",
    "/v1/environments",
    "Create a devserver or claim a container. Send an `Idempotency-Key` header to retry safely. "
    "202 while it is being made (poll it), 201 when it is ready at once (a warm container), "
    "200 when the key was seen before.",
    request=CreateEnvironment,
    response=Environment,
    status=202,
)
async def create_environment(request: web.Request) -> web.Response:
    body = await parse(request, CreateEnvironment)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 128 and key.isprintable()):
        raise Invalid("Idempotency-Key: 1 to 128 printable characters.", field="Idempotency-Key")
    outcome = await create(request.app[CREATES], principal(request), body, key)
    if not outcome.created:
        status = 200
    elif outcome.environment.state == "running":
        status = 201
    else:
        status = 202
    return reply(outcome.environment, status)


@route("GET", "/v1/environments/{ref}", "One environment, by id or name.", response=Environment)
async def get_environment(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return reply(
        await ownership.get_environment(
            fleet.store, fleet.config.zone, principal(request), request.match_info["ref"]
        )
    )


@route(
    "DELETE",
    "/v1/environments/{ref}",
    "Delete an environment; its disk is destroyed.",
    response=Environment,
    status=202,
)
async def delete_environment(request: web.Request) -> web.Response:
    env = await lifecycle.delete(request.app[FLEET], principal(request), request.match_info["ref"])
    return reply(env, 202)


@route(
    "POST",
    "/v1/environments/{ref}/extend",
    "Push a temporary environment's expiry back.",
    request=ExtendEnvironment,
    response=Environment,
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


# ---------------------------------------------------------------------------- agents


@route(
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
        fleet.store, fleet.clock, agent_token(request), body.environment_id
    ):
        raise Unauthorized("Unknown agent token for that environment; the agent was replaced.")
    return reply(HeartbeatAck(interval_seconds=fleet.config.heartbeat_seconds))


# ---------------------------------------------------------------------------- admin


@route(
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


@route(
    "POST",
    "/v1/admin/hosts/{name}/drain",
    "Drain a host: nothing new is placed on it, every environment on it moves live to another "
    "active host of its region (the drain coordinator), then it is in `maintenance`. 202: the "
    "host, `draining`; poll it, or follow the environments' events (`migrating`, `running`).",
    response=Host,
    status=202,
    auth="admin",
)
async def drain_host(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await migration.drain_host(request.app[FLEET], name)
    return reply(await _host(request, name), 202)


@route(
    "POST",
    "/v1/admin/hosts/{name}/activate",
    "Put a host back into service (after maintenance, or to stop a drain).",
    response=Host,
    auth="admin",
)
async def activate_host(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await set_host_state(request.app[FLEET].store, name, HostState.ACTIVE)
    return reply(await _host(request, name))


@route(
    "POST",
    "/v1/admin/environments/{ref}/migrate",
    "Move one environment live to another host of its region (`host`, or the one with most "
    "room). 202: it is `migrating` (`host` the new one, `migratingFrom` the old).",
    request=MigrateEnvironment,
    response=Environment,
    status=202,
    auth="admin",
)
async def migrate_environment(request: web.Request) -> web.Response:
    body = await parse_optional(request, MigrateEnvironment)
    env = await migration.migrate(
        request.app[FLEET], principal(request), request.match_info["ref"], body.host
    )
    return reply(env, 202)


@route(
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


@route(
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


@route(
    "GET",
    "/v1/admin/dns",
    "The zone's DNS server: serving, closed or black-hole, and its address.",
    response=DnsStatus,
    auth="admin",
)
async def dns_status(request: web.Request) -> web.Response:
    return reply(request.app[DNS].status())


@route(
    "POST",
    "/v1/admin/dns/stop",
    "Stop the zone's DNS server (exercises): closed, or `blackHole` (open sockets, no answers).",
    request=StopDns,
    response=DnsStatus,
    auth="admin",
)
async def dns_stop(request: web.Request) -> web.Response:
    body: StopDns = await parse_optional(request, StopDns)
    await request.app[DNS].stop(black_hole=body.black_hole)
    return reply(request.app[DNS].status())


@route(
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


# ---------------------------------------------------------------------------- wiring


def _guarded(route: Route) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.auth in ("user", "admin"):
            who = await request.app[FLEET].tokens.verify(request.headers.get("Authorization"))
            if route.auth == "admin" and who.role is not Role.ADMIN:
                raise Forbidden("This needs an admin token.")
            request[PRINCIPAL] = who
        return await route.handler(request)

    return handler


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, r.path, _guarded(r), name=r.handler.__name__)


# The profile API's routes live in their own module; importing it registers them in ROUTES.
from leeward.fleet import profile_routes as _profile_routes  # noqa: E402, F401
