"""The fleet's HTTP API under /v1: the whole route table, made of each audience's routes.

Every route is declared once, in its audience's module; the router and `/v1/openapi.json` are
both built from `ROUTES`, so the document cannot drift from the code."""

from __future__ import annotations

from leeward.fleet.api import (
    admin,
    agents,
    announcements,
    backups,
    environments,
    hostside,
    inbox,
    notify,
    profiles,
    public,
)
from leeward.fleet.api.routing import Route

ROUTES: tuple[Route, ...] = (
    *public.routes,
    *environments.routes,
    *backups.routes,
    *announcements.routes,
    *inbox.routes,
    *notify.routes,
    *admin.routes,
    *profiles.routes,
    *agents.routes,
    *hostside.routes,
)
