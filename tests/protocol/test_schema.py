"""The committed JSON Schema matches the pydantic models; `scripts/gen-protocol` rewrites it."""

from __future__ import annotations

from leeward_protocol.fleet import CreateDevserver, Environment
from leeward_protocol.schema import SCHEMA_DIR, render_schemas


def test_committed_schema_matches_the_models():
    wanted = render_schemas()
    present = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    stale = sorted(name for name in wanted if present.get(name) != wanted[name])
    extra = sorted(set(present) - set(wanted))
    assert not stale and not extra, (
        f"protocol/schema/ is out of date (changed: {stale}, extra: {extra}); "
        "run scripts/gen-protocol and commit the result"
    )


def test_wire_is_camel_case_and_requests_refuse_unknown_fields():
    env_schema = Environment.model_json_schema(by_alias=True)
    assert "sshPort" in env_schema["properties"]
    assert "ssh_port" not in env_schema["properties"]
    create = CreateDevserver.model_json_schema(by_alias=True)
    assert create["additionalProperties"] is False
