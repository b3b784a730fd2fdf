"""Errors the fleet answers with: a status, a stable code, and one sentence for the user."""

from __future__ import annotations

from leeward_protocol.fleet import ErrorBody, ErrorDetail


class FleetError(Exception):
    status = 400
    code = "invalid"

    def __init__(
        self, message: str, *, field: str | None = None, regions_with_room: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.regions_with_room = regions_with_room

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorDetail(
                code=self.code,
                message=self.message,
                field=self.field,
                regions_with_room=self.regions_with_room,
            )
        )


class Invalid(FleetError):
    status = 422
    code = "invalid"


class BadRequest(FleetError):
    status = 400
    code = "bad_request"


class Unauthorized(FleetError):
    status = 401
    code = "unauthorized"


class Forbidden(FleetError):
    status = 403
    code = "forbidden"


class NotFound(FleetError):
    status = 404
    code = "not_found"


class Conflict(FleetError):
    status = 409
    code = "conflict"


class NoCapacity(FleetError):
    status = 409
    code = "no_capacity"


class Unavailable(FleetError):
    status = 503
    code = "unavailable"
