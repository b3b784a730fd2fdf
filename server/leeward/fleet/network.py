"""The local fleet's network, as the fleet sees it (`network.kind = "namespaces"`): made when
the fleet starts (every region's network, every host's namespace and link: the fabric of
leeward.providers.fabric), and the region faults of the exercises: a region's links cut (a
storm: its environments unreachable at the network layer, nothing inside told) and restored.

With `network.kind = "loopback"` there is no network to cut: the fleet says so.
"""

from __future__ import annotations

import logging

from leeward.fleet.config import ConfigError, FleetConfig
from leeward.fleet.errors import Conflict, NotFound
from leeward.fleet.runtime import Fleet
from leeward.providers.fabric import Fabric, FabricError

log = logging.getLogger(__name__)


async def ensure_fabric(config: FleetConfig) -> Fabric:
    """The fabric of `config`'s regions and hosts, made or found again (a restart keeps its
    namespaces, links and routes, and the connections through them)."""
    ok, why = Fabric.probe()
    if not ok:
        raise ConfigError(
            f'network.kind = "namespaces" needs network namespaces, and this machine has none '
            f'usable: {why}. Set network.kind = "loopback" (docs/operator.md).'
        )
    fabric = Fabric(config.network.prefix, config.network.transit)
    try:
        await fabric.start()
        index = 0
        for region in config.regions:
            await fabric.add_region(region.name, region.network)
            for host in region.hosts:
                await fabric.ensure_host(host.name, region.name, index)
                index += 1
    except FabricError as exc:
        raise ConfigError(f"cannot make the fleet's network: {exc}") from None
    log.info(
        "network: %d hosts in network namespaces (%s-HOST), the fleet at %s",
        index,
        config.network.prefix,
        fabric.fleet_address,
    )
    return fabric


async def cut_region(fleet: Fleet, region: str, *, restore: bool = False) -> None:
    """Cut (or `restore`) every link of `region`'s hosts."""
    if fleet.config.region(region) is None:
        names = ", ".join(r.name for r in fleet.config.regions)
        raise NotFound(f"No region {region!r}; the regions are {names}.")
    if fleet.fabric is None:
        raise Conflict(
            'This fleet\'s environments have loopback addresses (network.kind = "loopback"): '
            "there are no links to cut. A fleet on network namespaces (root, `ip netns`) can "
            "cut a region (docs/operator.md)."
        )
    try:
        await (fleet.fabric.restore(region) if restore else fleet.fabric.cut(region))
    except FabricError as exc:
        raise Conflict(f"The network could not do it: {exc}") from None
    log.warning("region %s: links %s", region, "restored" if restore else "CUT")
