"""Typed keys for what the fleet's aiohttp application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from leeward.fleet.environments import Fleet
    from leeward.fleet.metrics import Metrics

FLEET: web.AppKey[Fleet] = web.AppKey("fleet")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
