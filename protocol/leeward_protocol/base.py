"""Base models for the wire: camelCase aliases, strict requests, lenient resources."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Resource(BaseModel):
    """What the fleet returns. Clients ignore fields they do not know, so the fleet can grow."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=False,
        # Every field is on the wire (None included), so generated types mark them all required.
        json_schema_serialization_defaults_required=True,
        # Validators are built on first use, not at import: a process that starts often (the
        # daemon, the proxy) pays only for the models it uses.
        defer_build=True,
    )

    def wire(self) -> dict[str, object]:
        """The JSON-ready camelCase form that goes on the wire."""
        return self.model_dump(mode="json", by_alias=True)


class Request(BaseModel):
    """Something a client sends. Unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
        defer_build=True,
    )

    def wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
