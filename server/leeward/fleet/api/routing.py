"""How the fleet's API declares, guards and answers its routes.

A route is declared once, beside its handler, in its module's `RouteTable` (as aiohttp's
RouteTableDef), with its request and response models, status and auth level; the router and
`/v1/openapi.json` are both built from the tables, so the document cannot drift from the
code. Handlers are thin: `parse` the body (and the `query` and `headers` the route declares)
with pydantic, call a room's function, `reply`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from leeward.common.validation import first_fault
from leeward.fleet.auth import Principal
from leeward.fleet.errors import BadRequest, Forbidden, Invalid, TooLarge, Unauthorized
from leeward.fleet.hostlink import authenticate_host
from leeward.fleet.state import FLEET
from leeward_protocol.base import Params
from leeward_protocol.fleet import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: Any = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: str = "user"  # "none", "user", "admin", "agent", "host"
    query: type[Params] | None = None
    headers: type[Params] | None = None
    path_params: type[Params] | None = None
    """Checked before the handler runs (a 422 naming the parameter); `{name}` in `path`."""
    body_required: bool = True
    """False where an empty body means the model's defaults (`parse_optional`)."""
    media_type: str = "application/json"
    """Of the success response."""


class RouteTable:
    """One module's routes, in the order they are declared."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        request: Any = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: str = "user",
        query: type[Params] | None = None,
        headers: type[Params] | None = None,
        path_params: type[Params] | None = None,
        body_required: bool = True,
        media_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self._routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    request,
                    response,
                    status,
                    auth,
                    query,
                    headers,
                    path_params,
                    body_required,
                    media_type,
                )
            )
            return handler

        return declare

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)


TABLE: web.AppKey[tuple[Route, ...]] = web.AppKey("route table")
"""The API's whole route table, as `add_routes` served it (the OpenAPI document reads it)."""


# ---------------------------------------------------------------------------- requests


async def parse(request: web.Request, model: Any) -> Any:
    """The body, validated into `model`; a clear 4xx naming the field otherwise.

    Strictly, as JSON: a number is not a string, `0` is not `false`, `"5"` or `5.5` is not a
    whole number (`5.0` is 5, as JSON Schema says), a timestamp is an RFC 3339 string (never
    seconds since 1970). What the document says a field is, is what the fleet takes."""
    raw = await request.read()
    if not raw:
        raise BadRequest("The request needs a JSON body.")
    try:
        return _adapter(model).validate_json(raw, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise BadRequest(f"The body is not valid JSON: {error['msg']}.") from None
        raise invalid_from(exc) from None


async def parse_optional(request: web.Request, model: Any) -> Any:
    """Like `parse`, but an empty body means the model's defaults."""
    if not await request.read():
        return _adapter(model).validate_python({})
    return await parse(request, model)


async def parse_large(request: web.Request, model: type[M]) -> M:
    """Parse a body that may be larger than the API's usual limit (profile uploads)."""
    limit = request.app[FLEET].config.profile_store.max_upload_bytes
    try:
        body: M = await parse(request.clone(client_max_size=limit), model)
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(
            f"The upload is over {limit} bytes; send the files in several uploads."
        ) from None
    return body


def query(request: web.Request, model: type[P]) -> P:
    """The URL's query, validated into `model`; a 422 naming the parameter otherwise."""
    return _params(dict(request.query), model, "query")


def headers(request: web.Request, model: type[P]) -> P:
    """The headers `model` names (case-insensitive, as HTTP's), validated into it."""
    names = [field.alias or name for name, field in model.model_fields.items()]
    return _params(
        {name: request.headers[name] for name in names if name in request.headers},
        model,
        "headers",
    )


def _params(data: dict[str, str], model: type[P], whole: str) -> P:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fault = first_fault(exc)
        raise Invalid(fault.sentence(whole), field=fault.field) from None


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    """Building a TypeAdapter generates its schema: once per model, not once per request."""
    return TypeAdapter(model)


def invalid_from(exc: ValidationError) -> Invalid:
    fault = first_fault(exc)
    return Invalid(fault.sentence("body"), field=fault.field)


def reply(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


# ---------------------------------------------------------------------------- who asks


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


def _guarded(route: Route) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.auth in ("user", "admin"):
            who = await request.app[FLEET].tokens.verify(request.headers.get("Authorization"))
            if route.auth == "admin" and who.role is not Role.ADMIN:
                raise Forbidden("This needs an admin token.")
            request[PRINCIPAL] = who
        if route.path_params is not None:
            _params(dict(request.match_info), route.path_params, "path")
        if route.auth == "host":
            fleet = request.app[FLEET]
            await authenticate_host(
                fleet.store,
                request.headers.get("Authorization"),
                request.match_info["name"],
                fleet.clock.now(),
            )
        return await route.handler(request)

    return handler


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Serve `routes` (each behind its auth guard) and keep the table for the OpenAPI
    document."""
    app[TABLE] = routes
    for r in routes:
        app.router.add_route(r.method, r.path, _guarded(r), name=r.handler.__name__)
