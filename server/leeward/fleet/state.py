"""Typed keys for what the fleet's aiohttp application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp_sse import EventSourceResponse

    from leeward.fleet.create import CreateQueue
    from leeward.fleet.metrics import Metrics
    from leeward.fleet.runtime import Fleet

FLEET: web.AppKey[Fleet] = web.AppKey("fleet")
CREATES: web.AppKey[CreateQueue] = web.AppKey("create queue")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")


class OpenStreams:
    """The event streams being served, ended at shutdown (they never end by themselves)."""

    def __init__(self) -> None:
        self.open: set[EventSourceResponse] = set()


STREAMS: web.AppKey[OpenStreams] = web.AppKey("event streams")
