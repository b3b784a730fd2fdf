"""`FleetError`: what the fleet refused, or why it could not be asked, on both ends of its API.

The fleet raises it (its subclasses in `leeward.fleet.errors` set the HTTP status and the
stable code) and answers it as an `ErrorBody`; its clients (the CLI's and the daemon's
`leeward.client.api`, the agent's `leeward.agent.fleet`) read it back from that body with
`from_answer`, or raise it themselves when no answer came. One class, so that a status, a code
and a field mean the same wherever they are looked at.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from leeward_protocol.fleet import ErrorBody, ErrorDetail


class FleetError(Exception):
    """`str(error)` is one sentence for the person: what went wrong and what to do."""

    status: int | None = None
    """The HTTP status the fleet answered (or answers) with; None when nothing answered."""
    code: str | None = None
    """The stable code of an `ErrorBody` ("invalid", "no_capacity", ...)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        regions_with_room: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.field = field
        self.regions_with_room = regions_with_room

    def body(self) -> ErrorBody:
        """The answer's body, as the fleet sends it."""
        return ErrorBody(
            error=ErrorDetail(
                code=self.code or "internal",
                message=self.message,
                field=self.field,
                regions_with_room=self.regions_with_room,
            )
        )

    @classmethod
    def from_answer(cls, status: int, text: str) -> FleetError | None:
        """The error an answer's `ErrorBody` carries; None when `text` is not one."""
        try:
            detail = ErrorBody.model_validate(json.loads(text)).error
        except (ValueError, ValidationError):
            return None
        return cls(
            detail.message,
            status=status,
            code=detail.code,
            field=detail.field,
            regions_with_room=detail.regions_with_room,
        )
