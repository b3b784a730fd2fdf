"""Placement: which host in which region takes an environment, and which address it gets.

Plain functions over a write session, and the batch that several placements in one write
transaction share. Host usage is derived from the live environments on it,
never kept in a counter, so a crash cannot leak or double-count capacity. Concurrent placements
are serialised per region: on PostgreSQL by locking the region's host rows, on SQLite by the
store's `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import NoCapacity
from leeward.fleet.resources import new_environment_id
from leeward.fleet.store.models import EnvironmentRow, HostRow, IdempotencyRow, RegionRow
from leeward_protocol.fleet import (
    LIVE_STATES,
    EnvironmentKind,
    EnvironmentState,
    Hardware,
    HostState,
    Lifespan,
)

LIVE = [s.value for s in LIVE_STATES]


@dataclass(frozen=True)
class HostUsage:
    name: str
    region: str
    state: HostState
    capacity: Hardware
    used: Hardware
    environments: int
    reachable: bool | None = None
    """Whether its host agent is heard from; None where the fleet starts environments itself."""
    last_seen: datetime | None = None

    @property
    def free(self) -> Hardware:
        return Hardware(
            cpus=max(self.capacity.cpus - self.used.cpus, 0),
            memory_gib=max(self.capacity.memory_gib - self.used.memory_gib, 0),
            gpus=max(self.capacity.gpus - self.used.gpus, 0),
        )


_hosts = cast(Table, HostRow.__table__)
_envs = cast(Table, EnvironmentRow.__table__)
_regions = cast(Table, RegionRow.__table__)


def _usage_query() -> Select[Any]:
    """Hosts with the sums of their live environments' hardware. Built once: SQLAlchemy Core
    statements cost little to execute again, while building them anew costs milliseconds."""
    usage = select(
        _envs.c.host,
        func.sum(_envs.c.cpus).label("cpus"),
        func.sum(_envs.c.memory_gib).label("memory_gib"),
        func.sum(_envs.c.gpus).label("gpus"),
        func.count().label("n"),
    ).where(_envs.c.state.in_(LIVE), _envs.c.host.is_not(None))
    used = usage.group_by(_envs.c.host).subquery()
    query = (
        select(
            _hosts.c.name,
            _hosts.c.region,
            _hosts.c.state,
            _hosts.c.cpus,
            _hosts.c.memory_gib,
            _hosts.c.gpus,
            func.coalesce(used.c.cpus, 0),
            func.coalesce(used.c.memory_gib, 0),
            func.coalesce(used.c.gpus, 0),
            func.coalesce(used.c.n, 0),
            _hosts.c.reachable,
            _hosts.c.last_seen_at,
        )
        .select_from(_hosts.outerjoin(used, used.c.host == _hosts.c.name))
        .order_by(_hosts.c.name)
    )
    return query


_USAGE = _usage_query()
# Lock the hosts in a statement of its own, in name order (so concurrent lockers cannot
# deadlock): READ COMMITTED then gives the usage query a fresh snapshot taken after the lock is
# ours. (FOR UPDATE on the joined query would re-check only the host rows after waiting, and
# keep the stale sums.)
_LOCK_HOSTS = select(_hosts.c.name).order_by(_hosts.c.name).with_for_update()
_REGION_NETWORK = select(_regions.c.network).where(_regions.c.name == bindparam("region"))
_RESERVE_ADDRESSES = (
    update(_regions)
    .where(_regions.c.name == bindparam("region"))
    .values(next_address=_regions.c.next_address + bindparam("count"))
    .returning(_regions.c.next_address)
)
_ADDRESS_TAKEN = select(func.count()).where(_envs.c.live_address == bindparam("address"))


async def host_usage(session: AsyncSession, *, lock: bool = False) -> list[HostUsage]:
    """Every host with what its live environments use. With `lock` (inside a write
    transaction), no other placement runs until this one commits."""
    if lock and session.get_bind().dialect.name == "postgresql":
        await session.execute(_LOCK_HOSTS)
    rows = (await session.execute(_USAGE)).all()
    return [
        HostUsage(
            name=name,
            region=host_region,
            state=HostState(state),
            capacity=Hardware(cpus=cpus, memory_gib=memory_gib, gpus=gpus),
            used=Hardware(cpus=int(used_cpus), memory_gib=int(used_mem), gpus=int(used_gpus)),
            environments=int(count),
            reachable=reachable,
            last_seen=last_seen,
        )
        for (
            name,
            host_region,
            state,
            cpus,
            memory_gib,
            gpus,
            used_cpus,
            used_mem,
            used_gpus,
            count,
            reachable,
            last_seen,
        ) in rows
    ]


def usable(host: HostUsage) -> bool:
    """Whether new environments may go to `host`: active, and its agent heard from."""
    return host.state is HostState.ACTIVE and host.reachable is not False


def choose_host(hosts: list[HostUsage], need: Hardware) -> HostUsage | None:
    """The active host where `need` fits with the most room left: spread, don't pack, so a
    neighbour's burst hurts less and a host drain moves fewer environments."""
    fitting = [h for h in hosts if usable(h) and need.fits_in(h.free)]
    if not fitting:
        return None
    return max(fitting, key=lambda h: (h.free.memory_gib, h.free.cpus, h.free.gpus, h.name))


async def reserve_addresses(session: AsyncSession, region: str, count: int) -> list[str]:
    """`count` stable addresses from the region's network that no live environment holds:
    one counter update for all of them while the range has not wrapped yet."""
    cidr = await session.scalar(_REGION_NETWORK, {"region": region})
    if cidr is None:
        raise NoCapacity(f"Region {region} is not in the store; restart the fleet.", field="region")
    network = ipaddress.ip_network(cidr)
    usable = network.num_addresses - 2  # not the network address, not broadcast
    end = (
        await session.execute(_RESERVE_ADDRESSES, {"region": region, "count": count})
    ).scalar_one()
    found: list[str] = []
    taken: set[str] = set()
    counter = end - count
    for _ in range(count + min(usable, 1024)):
        if len(found) == count:
            return found
        counter += 1
        if counter > end:
            # Past the reserved block (the range had wrapped and some were taken): one more.
            counter = (
                await session.execute(_RESERVE_ADDRESSES, {"region": region, "count": 1})
            ).scalar_one()
            end = counter
        candidate = str(network[1 + (counter - 1) % usable])
        if counter <= usable:
            found.append(candidate)  # the first pass through the range: never handed out
        elif candidate not in taken and not await session.scalar(
            _ADDRESS_TAKEN, {"address": candidate}
        ):
            found.append(candidate)
        taken.add(candidate)
    if len(found) == count:
        return found
    raise NoCapacity(
        f"Region {region} has no free address left in {network}; delete an environment there "
        "or choose another region.",
        field="region",
    )


# ---------------------------------------------------------------------------- batches

_ENV_COLUMNS = list(_envs.columns)


@dataclass
class Batch:
    """What one placement transaction has decided so far, before it is written."""

    hosts: list[HostUsage] | None = None
    names: set[str] = field(default_factory=set)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    made: dict[str, EnvironmentRow] = field(default_factory=dict)
    idempotency: list[dict[str, Any]] = field(default_factory=list)

    async def usage(self, session: AsyncSession) -> list[HostUsage]:
        """Every host's usage, read (and on PostgreSQL locked, all hosts in name order, so two
        replicas' batches never deadlock) once; later placements are counted in memory."""
        if self.hosts is None:
            self.hosts = await host_usage(session, lock=True)
        return self.hosts

    def take(self, host: HostUsage, need: Hardware) -> None:
        assert self.hosts is not None
        used = host.used
        self.hosts[self.hosts.index(host)] = replace(
            host,
            used=Hardware(
                cpus=used.cpus + need.cpus,
                memory_gib=used.memory_gib + need.memory_gib,
                gpus=used.gpus + need.gpus,
            ),
            environments=host.environments + 1,
        )

    async def flush(self, session: AsyncSession) -> None:
        """Give the batch's new environments their addresses (one reservation per region), then
        write them and their idempotency keys as Core inserts (the ORM's unit of work costs
        more than placement itself)."""
        by_region: dict[str, list[EnvironmentRow]] = {}
        for row in self.made.values():
            if row.address is None:
                by_region.setdefault(row.region, []).append(row)
        for region, rows in by_region.items():
            for row, address in zip(
                rows, await reserve_addresses(session, region, len(rows)), strict=True
            ):
                row.address = row.live_address = address
        if self.made:
            await session.execute(
                insert(EnvironmentRow),
                [{c.key: getattr(row, c.key) for c in _ENV_COLUMNS} for row in self.made.values()],
            )
        if self.idempotency:
            await session.execute(insert(IdempotencyRow), self.idempotency)


# ---------------------------------------------------------------------------- placing one


@dataclass(frozen=True)
class NewEnvironment:
    """What is to be placed: a user's environment, or a warm container (no owner)."""

    name: str
    kind: EnvironmentKind
    need: Hardware
    region: str | None
    """The region asked for; None: the one with the most room."""
    owner: str | None
    flavor: str | None = None
    profile: str | None = None
    lifespan: Lifespan = Lifespan.TEMPORARY
    expires_at: datetime | None = None


def regions_in_order(
    config: FleetConfig, usage: list[HostUsage], asked: str | None, need: Hardware
) -> list[str]:
    if asked is not None:
        return [asked]
    if len(config.regions) == 1:
        return [config.regions[0].name]

    # The region with the most free room that fits first.
    def room(region: str) -> tuple[int, int]:
        free = [h.free for h in usage if h.region == region and usable(h) and need.fits_in(h.free)]
        return (len(free), sum(f.memory_gib for f in free))

    names = [r.name for r in config.regions]
    return sorted(names, key=room, reverse=True)


def no_capacity(usage: list[HostUsage], asked: str | None, need: Hardware) -> NoCapacity:
    """The refusal when no host fits `need`: which other regions have room, if any."""
    with_room = sorted(
        {h.region for h in usage if usable(h) and need.fits_in(h.free) and h.region != asked}
    )
    cut_off = [
        h.name
        for h in usage
        if h.state is HostState.ACTIVE and h.reachable is False and need.fits_in(h.free)
        if asked is None or h.region == asked
    ]
    if cut_off and not with_room:
        return NoCapacity(
            f"The hosts that have room ({', '.join(cut_off)}) are unreachable: their host "
            "agents are not heard from. Try again later; an operator can see them with "
            "`leeward admin host list`.",
            regions_with_room=[],
        )
    if asked is None:
        return NoCapacity(
            "No region has room for this environment now; try a smaller flavor or later.",
            regions_with_room=[],
        )
    if with_room:
        return NoCapacity(
            f"Region {asked} has no room for this environment now; "
            f"{', '.join(with_room)} {'has' if len(with_room) == 1 else 'have'} room.",
            field="region",
            regions_with_room=with_room,
        )
    return NoCapacity(
        f"Region {asked} has no room for this environment now, and no other region has "
        "either; try a smaller flavor or later.",
        field="region",
        regions_with_room=[],
    )


async def place(
    session: AsyncSession,
    batch: Batch,
    config: FleetConfig,
    new: NewEnvironment,
    now: datetime,
) -> EnvironmentRow:
    """Choose a host for `new` and build its row, provisioning; NoCapacity if none fits. The
    capacity is taken in `batch` at once; the row (without its address, reserved for the whole
    batch) is written when the batch flushes."""
    usage = await batch.usage(session)
    host = None
    for candidate in regions_in_order(config, usage, new.region, new.need):
        host = choose_host([h for h in usage if h.region == candidate], new.need)
        if host is not None:
            break
    if host is None:
        raise no_capacity(usage, new.region, new.need)
    batch.take(host, new.need)
    row = EnvironmentRow(
        id=new_environment_id(),
        name=new.name,
        live_name=new.name,
        kind=new.kind.value,
        flavor=new.flavor,
        profile=new.profile,
        cpus=new.need.cpus,
        memory_gib=new.need.memory_gib,
        gpus=new.need.gpus,
        region=host.region,
        host=host.name,
        address=None,  # reserved for the whole batch when it is written
        ssh_port=config.provider.ssh_port,
        state=EnvironmentState.PROVISIONING.value,
        status_message=f"placed on {host.name}; certified; starting",
        owner=new.owner,
        lifespan=new.lifespan.value,
        expires_at=new.expires_at,
        created_at=now,
        updated_at=now,
    )
    batch.made[row.id] = row
    return row
