"""/v1/openapi.json, generated from the route table and the protocol's pydantic models.

The table is an argument (the route that serves the document reads it from the app), so this
module needs none of the route modules."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from leeward import __version__
from leeward_protocol.fleet import CreateEnvironment, ErrorBody

if TYPE_CHECKING:
    from leeward.fleet.api.routing import Route

REF = "#/components/schemas/{model}"


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
        if r.response is not None:
            ok["content"] = {
                "application/json": {"schema": {"$ref": REF.format(model=r.response.__name__)}}
            }
        operation["responses"][str(r.status)] = ok
        if r.request is not None:
            name = r.request.__name__ if isinstance(r.request, type) else "CreateEnvironment"
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}},
            }
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in r.path.split("/")
            if part.startswith("{")
        ]
        if r.handler.__name__ == "create_environment":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 128},
                }
            )
        if params:
            operation["parameters"] = params
        if r.auth != "none":
            operation["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leeward fleet API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
