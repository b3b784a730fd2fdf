"""The parameters of the fleet API's URLs and headers: paths, queries and request headers
(leeward_protocol.base.Params), each field one parameter."""

from __future__ import annotations

from pydantic import Field

from leeward_protocol.base import Params, Whole
from leeward_protocol.fleet import NAMED


class EnvironmentPath(Params):
    ref: str = Field(min_length=1, max_length=64, description="An environment's id or name.")


class HostPath(Params):
    name: str = Field(description="A host's name.", json_schema_extra=NAMED)


class ListQuery(Params):
    """`GET /v1/environments`."""

    all: bool = Field(default=False, description="Admins: everyone's environments.")


class EventsQuery(Params):
    """`GET /v1/events`."""

    after: Whole | None = Field(
        default=None, description="The last event id seen (as `Last-Event-ID`)."
    )
    all: bool = Field(default=False, description="Admins: everyone's events.")


class EventsHeaders(Params):
    last_event_id: Whole | None = Field(
        default=None,
        alias="Last-Event-ID",
        description="The last event id seen (the SSE reconnection header); before `after`.",
    )


IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,126}[!-~])?$"
"""1 to 128 printable ASCII characters, not starting or ending with a space (HTTP strips
those)."""


class CreateHeaders(Params):
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="1 to 128 printable ASCII characters: a retry with the same key is the "
        "same create.",
    )


class AgentQuery(Params):
    """The agent routes that name their environment in the query."""

    environment: str = Field(min_length=1, max_length=64, description="The environment's id.")


class AgentWaitQuery(AgentQuery):
    after: Whole = Field(default=0, description="The profile version the agent has.")
