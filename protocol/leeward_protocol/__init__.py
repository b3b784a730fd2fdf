"""Leeward's wire protocol: pydantic v2 models, the single definition of every message."""

from leeward_protocol.base import Request, Resource

PROTOCOL_VERSION = "1"

__all__ = ["PROTOCOL_VERSION", "Request", "Resource"]
