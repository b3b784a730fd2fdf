"""The fleet's refusals: each a `FleetError` (leeward.common.errors) with its HTTP status and
stable code, and one sentence for the user."""

from __future__ import annotations

from leeward.common.errors import FleetError


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


class MethodNotAllowed(FleetError):
    status = 405
    code = "method_not_allowed"


class Conflict(FleetError):
    status = 409
    code = "conflict"


class NoCapacity(FleetError):
    status = 409
    code = "no_capacity"


class TooLarge(FleetError):
    status = 413
    code = "too_large"


class Internal(FleetError):
    status = 500
    code = "internal"


class Unavailable(FleetError):
    status = 503
    code = "unavailable"


__all__ = [
    "BadRequest",
    "Conflict",
    "FleetError",
    "Forbidden",
    "Internal",
    "Invalid",
    "MethodNotAllowed",
    "NoCapacity",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
