"""The zone's DNS server as operators see and drive it (`/v1/admin/dns`): stopped and started
for disaster exercises."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from leeward_protocol.base import Request, Resource


class DnsMode(StrEnum):
    """serving: answers; closed: nothing listens; black-hole: listens and never answers."""

    SERVING = "serving"
    CLOSED = "closed"
    BLACK_HOLE = "black-hole"


class DnsStatus(Resource):
    """`GET /v1/admin/dns`: whether the zone's DNS server answers, and where."""

    zone: str
    mode: DnsMode
    address: str | None = Field(default=None, description="`HOST:PORT` (UDP and TCP).")


class StopDns(Request):
    black_hole: bool = Field(
        default=False, description="Keep the sockets open and answer nothing (a lost resolver)."
    )
