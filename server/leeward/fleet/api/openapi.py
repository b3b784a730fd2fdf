"""/v1/openapi.json, generated from the route table and the protocol's pydantic models.

The table is an argument (the route that serves the document reads it from the app), so this
module needs none of the route modules. Each route's path, query and header parameters, body
and success media type come from its declaration, so that clients and test tools (schemathesis
runs against it in the suite) can trust the document."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from leeward import __version__
from leeward_protocol.fleet import CreateEnvironment, ErrorBody
from leeward_protocol.userconfig import EXACTLY_ONE

if TYPE_CHECKING:
    from leeward.fleet.api.routing import Route
    from leeward_protocol.base import Params

REF = "#/components/schemas/{model}"

_PATH_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
"""aiohttp's `{name}` or `{name:regex}`: the parameter is `name`."""


def path_parameters(path: str) -> list[str]:
    return _PATH_PARAMETER.findall(path)


def openapi_path(path: str) -> str:
    """The route's path as OpenAPI writes it: `{name}`, without aiohttp's regex."""
    return _PATH_PARAMETER.sub(lambda m: "{" + m.group(1) + "}", path)


def _parameters(model: type[Params], where: str) -> list[dict[str, Any]]:
    """One OpenAPI parameter per field of `model`, with its schema's constraints."""
    schema = model.model_json_schema(by_alias=True, ref_template=REF)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        # `X | None` is "may be absent" here: a query or a header has no null.
        options = [p for p in prop.pop("anyOf", []) if p.get("type") != "null"]
        if len(options) == 1:
            prop = {**options[0], **prop}
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": name in required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


def _event(model: str) -> dict[str, Any]:
    """One Server-Sent Event whose `data` is `model` as JSON (each event, as OpenAPI 3.1 reads
    an event stream's schema)."""
    return {
        "type": "object",
        "required": ["data", "event", "id"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF.format(model=model)},
            },
        },
    }


@functools.cache
def openapi_document(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The document for `routes` (built once per table: it costs a schema per model)."""
    models: set[type[BaseModel]] = {ErrorBody}
    for r in routes:
        if isinstance(r.request, type) and issubclass(r.request, BaseModel):
            models.add(r.request)
        if r.response is not None:
            models.add(r.response)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "validation") for m in ordered], by_alias=True, ref_template=REF
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    union = TypeAdapter(CreateEnvironment).json_schema(by_alias=True, ref_template=REF)
    schemas.update(union.pop("$defs", {}))
    schemas["CreateEnvironment"] = union
    for schema in schemas.values():
        if EXACTLY_ONE in schema:
            schema["oneOf"] = [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in schema.pop(EXACTLY_ONE)
            ]

    paths: dict[str, Any] = {}
    for r in routes:
        operation: dict[str, Any] = {
            "operationId": r.handler.__name__,
            "summary": r.summary,
            "responses": {
                "default": {
                    "description": "An error: what went wrong and what to do.",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}
                    },
                }
            },
        }
        ok: dict[str, Any] = {"description": "Success."}
        if r.response is not None and r.media_type == "text/event-stream":
            ok["content"] = {r.media_type: {"schema": _event(r.response.__name__)}}
        elif r.response is not None:
            ok["content"] = {
                r.media_type: {"schema": {"$ref": REF.format(model=r.response.__name__)}}
            }
        elif r.media_type != "application/json":
            ok["content"] = {r.media_type: {"schema": {"type": "string"}}}
        operation["responses"][str(r.status)] = ok
        if r.request is not None:
            name = r.request.__name__ if isinstance(r.request, type) else "CreateEnvironment"
            operation["requestBody"] = {
                "required": r.body_required,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}},
            }
        if r.path_params is not None:
            params = _parameters(r.path_params, "path")
        else:
            params = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in path_parameters(r.path)
            ]
        if r.query is not None:
            params += _parameters(r.query, "query")
        if r.headers is not None:
            params += _parameters(r.headers, "header")
        if params:
            operation["parameters"] = params
        if r.auth != "none":
            operation["security"] = [{"bearer": []}]
        paths.setdefault(openapi_path(r.path), {})[r.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leeward fleet API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
