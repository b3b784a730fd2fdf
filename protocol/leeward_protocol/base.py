"""Base models for the wire: camelCase aliases, strict requests, lenient resources; the
parameters of a URL's query or a request's headers; and the bounds of every integer taken in.

Every integer a client sends has a declared range, here or at its field, so that it is refused
with a sentence before it reaches a C conversion, a datetime or the store (a 64-bit column).
`tests/fleet/test_openapi.py` fails when a request's integer in the API has no bounds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_WHOLE = 2**53 - 1
"""The largest whole number the API takes: JSON carries it exactly in every language
(JavaScript's `Number.MAX_SAFE_INTEGER`), and it fits SQLite's and PostgreSQL's 64-bit
integers."""

MAX_HOURS = 24 * 366 * 10
"""Ten years: the most hours any lifetime may be asked for (a fleet's policy allows fewer)."""


def _integral(value: object) -> object:
    """`2.0` is the whole number 2 (JSON Schema's `integer` says so); `2.5` stays a float, and
    is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""For every integer a request takes: bodies are validated strictly (`"5"` and `true` are not
numbers), but a number with no fraction is a whole number."""

Whole = Annotated[int, Field(ge=0, le=MAX_WHOLE), Integral]
"""A count, a version or an id: 0 to `MAX_WHOLE`."""

Hours = Annotated[int, Field(ge=1, le=MAX_HOURS), Integral]
"""A lifetime in hours: 1 to `MAX_HOURS`."""


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
    """Something a client sends. Unknown fields are refused, so a typo is an error, not a no-op;
    a string is taken as sent (its spaces are its own: the document's lengths and patterns are
    about what is sent, and so is what the fleet checks)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True
    )

    def wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Params(BaseModel):
    """The parameters of a URL's query or of a request's headers. Each field is one parameter
    (its alias is its name on the wire); unknown ones are ignored, as HTTP does."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)
