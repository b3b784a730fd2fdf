"""Hosts as operators see and steer them: every host with its usage, and its state (active,
draining, maintenance; decommissioned when it left the config)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet import announcements
from leeward.fleet.errors import Conflict, NotFound
from leeward.fleet.placement import HostUsage, host_usage
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import HostRow
from leeward_protocol.fleet import HostState


async def list_hosts(store: Store) -> list[HostUsage]:
    async with store.read() as session:
        return await host_usage(session)


async def in_service(session: AsyncSession, name: str) -> HostRow:
    """Host `name`, to act on: 404 if there is none, 409 if it left the config."""
    row = await session.get(HostRow, name)
    if row is None:
        raise NotFound(f"No host {name!r}: `leeward admin host list` shows them.")
    if row.state == HostState.DECOMMISSIONED:
        raise Conflict(f"Host {name} is decommissioned (not in the config any more).")
    if row.state == HostState.RETIRED:
        raise Conflict(f"Host {name} is retired (decommissioned by an operator).")
    return row


async def set_host_state(store: Store, name: str, state: HostState, now: datetime) -> None:
    async with store.write() as session:
        row = await in_service(session, name)
        if row.state == HostState.DECOMMISSIONING and state != HostState.DECOMMISSIONING:
            # The decommission is cancelled: its banner goes (leeward.fleet.decommission).
            await announcements.withdraw_source(session, now, f"decommission:{name}")
        row.state = state.value
