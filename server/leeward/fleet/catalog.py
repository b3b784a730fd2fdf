"""The catalog: what a user can ask for (regions with their free room, flavors, container
profiles, lifespans), from the config and the hosts' usage read at that moment."""

from __future__ import annotations

from collections.abc import Iterable

from leeward.fleet.config import FleetConfig
from leeward.fleet.placement import host_usage, usable
from leeward.fleet.store.db import Store
from leeward_protocol.fleet import Catalog, Hardware, LifespanPolicy, Region


async def current_catalog(store: Store, config: FleetConfig, probes: dict[str, str]) -> Catalog:
    """The catalog as the fleet stands now; `probes` are the regions' gateways (region ->
    HOST:PORT) that clients time to find their nearest region."""
    async with store.read() as session:
        usage = await host_usage(session)
    regions = []
    for region in config.regions:
        hosts = [h for h in usage if h.region == region.name]
        active = [h for h in hosts if usable(h)]
        regions.append(
            Region(
                name=region.name,
                display_name=region.display_name,
                accepting=bool(active),
                hosts=len(hosts),
                capacity=_sum(h.capacity for h in hosts),
                free=_sum(h.free for h in active),
                largest_free=max(
                    (h.free for h in active),
                    key=lambda f: (f.memory_gib, f.cpus, f.gpus),
                    default=Hardware(cpus=0, memory_gib=0, gpus=0),
                ),
                probe=probes.get(region.name),
            )
        )
    lt = config.lifetimes
    return Catalog(
        zone=config.zone,
        regions=regions,
        flavors=config.flavors,
        profiles=config.profiles,
        lifespans=LifespanPolicy(
            devserver_default_hours=lt.devserver_default_hours,
            devserver_max_hours=lt.devserver_max_hours,
            container_hours=lt.container_hours,
            container_max_hours=lt.container_max_hours,
        ),
    )


def _sum(items: Iterable[Hardware]) -> Hardware:
    total = Hardware(cpus=0, memory_gib=0, gpus=0)
    for h in items:
        total = Hardware(
            cpus=total.cpus + h.cpus,
            memory_gib=total.memory_gib + h.memory_gib,
            gpus=total.gpus + h.gpus,
        )
    return total
