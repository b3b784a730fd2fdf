"""JSON Schema for every model in the protocol, as `scripts/gen-protocol` writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from leeward_protocol import daemon, dns, fleet, notify, profile
from leeward_protocol.base import Request, Resource
from leeward_protocol.userconfig import UserConfig

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


def protocol_models() -> dict[str, type[BaseModel]]:
    """Every request and resource model, by name, in a stable order."""
    found: dict[str, type[BaseModel]] = {}
    for module in (fleet, dns, profile, notify, daemon):
        for name in sorted(vars(module)):
            obj = getattr(module, name)
            if (
                isinstance(obj, type)
                and issubclass(obj, (Request, Resource))
                and obj not in (Request, Resource)
                and not name.startswith("_")
            ):
                found[name] = obj
    return found


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, for every schema file under protocol/schema/."""
    files: dict[str, str] = {}
    for name, model in protocol_models().items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        if issubclass(model, Request):
            schema = model.model_json_schema(by_alias=True, mode="validation")
        files[f"{name}.json"] = _dump(schema)
    union: Any = TypeAdapter(fleet.CreateEnvironment).json_schema(by_alias=True)
    union["title"] = "CreateEnvironment"
    files["CreateEnvironment.json"] = _dump(union)
    files["methods.json"] = _dump(method_table())
    # The user's config.toml: snake_case keys (TOML's), for editors' completion.
    # (The same shape as inside `Profile`, so it carries no `$id` of its own.)
    config_schema = UserConfig.model_json_schema(mode="validation")
    files["UserConfig.json"] = _dump(config_schema)
    return files


def method_table() -> dict[str, Any]:
    """The daemon's JSON-RPC methods and notifications with the names of their models, from
    which the extension's typed request and notification constants are generated."""
    return {
        "requests": {
            method: {"params": params.__name__, "result": result.__name__}
            for method, (params, result) in daemon.METHODS.items()
        },
        "notifications": {
            method: {"params": params.__name__} for method, params in daemon.NOTIFICATIONS.items()
        },
    }


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
