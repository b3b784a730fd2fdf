"""Placement: which host in which region takes an environment, and which address it gets.

Plain functions over a write session. Host usage is derived from the live environments on it,
never kept in a counter, so a crash cannot leak or double-count capacity. Concurrent placements
are serialised per region: on PostgreSQL by locking the region's host rows, on SQLite by the
store's `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.store.models import EnvironmentRow, HostRow, RegionRow
from leeward_protocol.fleet import LIVE_STATES, Hardware, HostState

LIVE = [s.value for s in LIVE_STATES]


@dataclass(frozen=True)
class HostUsage:
    name: str
    region: str
    state: HostState
    capacity: Hardware
    used: Hardware
    environments: int

    @property
    def free(self) -> Hardware:
        return Hardware(
            cpus=max(self.capacity.cpus - self.used.cpus, 0),
            memory_gib=max(self.capacity.memory_gib - self.used.memory_gib, 0),
            gpus=max(self.capacity.gpus - self.used.gpus, 0),
        )


async def host_usage(
    session: AsyncSession, region: str | None = None, *, lock: bool = False
) -> list[HostUsage]:
    """Every host (of one region, if given) with what its live environments use."""
    usage = (
        select(
            EnvironmentRow.host.label("host"),
            func.sum(EnvironmentRow.cpus).label("cpus"),
            func.sum(EnvironmentRow.memory_gib).label("memory_gib"),
            func.sum(EnvironmentRow.gpus).label("gpus"),
            func.count().label("n"),
        )
        .where(EnvironmentRow.state.in_(LIVE), EnvironmentRow.host.is_not(None))
        .group_by(EnvironmentRow.host)
    )
    if region is not None:
        usage = usage.where(EnvironmentRow.region == region)
    used = usage.subquery()
    query = (
        select(
            HostRow,
            func.coalesce(used.c.cpus, 0),
            func.coalesce(used.c.memory_gib, 0),
            func.coalesce(used.c.gpus, 0),
            func.coalesce(used.c.n, 0),
        )
        .outerjoin(used, used.c.host == HostRow.name)
        .order_by(HostRow.name)
    )
    if region is not None:
        query = query.where(HostRow.region == region)
    if lock and session.get_bind().dialect.name == "postgresql":
        # Lock first, in a statement of its own: READ COMMITTED gives the usage query below a
        # fresh snapshot taken after the lock is ours. (FOR UPDATE on the joined query would
        # re-check only the host rows after waiting and keep the stale usage.)
        lock_query = select(HostRow.name).order_by(HostRow.name).with_for_update()
        if region is not None:
            lock_query = lock_query.where(HostRow.region == region)
        await session.execute(lock_query)
    rows = (await session.execute(query)).all()
    result = []
    for host, cpus, mem, gpus, count in rows:
        result.append(
            HostUsage(
                name=host.name,
                region=host.region,
                state=HostState(host.state),
                capacity=Hardware(cpus=host.cpus, memory_gib=host.memory_gib, gpus=host.gpus),
                used=Hardware(cpus=int(cpus), memory_gib=int(mem), gpus=int(gpus)),
                environments=int(count),
            )
        )
    return result


def choose_host(hosts: list[HostUsage], need: Hardware) -> HostUsage | None:
    """The active host where `need` fits with the most room left: spread, don't pack, so a
    neighbour's burst hurts less and a host drain moves fewer environments."""
    fitting = [h for h in hosts if h.state is HostState.ACTIVE and need.fits_in(h.free)]
    if not fitting:
        return None
    return max(fitting, key=lambda h: (h.free.memory_gib, h.free.cpus, h.free.gpus, h.name))


async def next_address(session: AsyncSession, region: str) -> str:
    """A stable address from the region's network that no live environment holds."""
    row = await session.get(RegionRow, region)
    if row is None:
        raise LookupError(f"region {region} is not in the store")
    network = ipaddress.ip_network(row.network)
    usable = network.num_addresses - 2  # not the network address, not broadcast
    for _ in range(min(usable, 1024)):
        counter = (
            await session.execute(
                update(RegionRow)
                .where(RegionRow.name == region)
                .values(next_address=RegionRow.next_address + 1)
                .returning(RegionRow.next_address)
            )
        ).scalar_one()
        candidate = str(network[1 + (counter - 1) % usable])
        if counter <= usable:
            return candidate  # the first pass through the range: never handed out before
        taken = await session.scalar(
            select(func.count()).where(EnvironmentRow.live_address == candidate)
        )
        if not taken:
            return candidate
    raise LookupError(f"region {region} has no free address left in {network}")
