"""`leeward admin region cut|restore` through the fleet's API: on a fleet whose network is made
of namespaces, the region's links go down and come back (and with them the routes to its
environments); on a loopback fleet there are no links, and the fleet says so."""

from __future__ import annotations

import secrets
import socket
from ipaddress import IPv4Network

import pytest

from leeward.common import netns
from leeward.providers.fabric import Fabric
from tests.conftest import small_config
from tests.host.conftest import REGIONS, TRANSITS, free_network

PROBE = Fabric.probe()


async def test_a_loopback_fleet_has_no_links_to_cut(start_fleet, tmp_path, sqlite_url):
    async with start_fleet(small_config(tmp_path, sqlite_url, regions=1), background=False) as f:
        status, body = await f.admin.call("POST", "/v1/admin/regions/north/cut")
        assert status == 409 and "loopback" in body["error"]["message"], body
        status, body = await f.admin.call("POST", "/v1/admin/regions/nowhere/cut")
        assert status == 404 and "north" in body["error"]["message"], body
        status, _ = await f.api.call("POST", "/v1/admin/regions/north/cut")
        assert status == 403, "only admins cut regions"


@pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}")
async def test_a_region_cut_and_restored_through_the_api(start_fleet, tmp_path, sqlite_url):
    config = small_config(tmp_path, sqlite_url, regions=2, hosts=1)
    prefix = f"lc{secrets.token_hex(2)[:3]}"
    config.network.kind = "namespaces"
    config.network.prefix = prefix
    config.network.transit = free_network(TRANSITS)
    taken: list[IPv4Network] = []
    for region in config.regions:
        region.network = free_network(REGIONS, taken)
        taken.append(region.network)
    fabric = Fabric(prefix, config.network.transit)
    try:
        async with start_fleet(config, background=False) as f:
            # The fleet made the network: a host per namespace, a listener on an address of
            # each region's host.
            north, south = (str(r.network[9]) for r in config.regions)
            for address, host in ((north, "north-h1"), (south, "south-h1")):
                await fabric.attach(address, host)
            servers = {}
            for address, host in ((north, "north-h1"), (south, "south-h1")):
                server = netns.socket_in(fabric.namespace(host))
                server.bind((address, 0))
                server.listen()
                servers[address] = server

            def reaches(address: str) -> bool:
                port = servers[address].getsockname()[1]
                try:
                    socket.create_connection((address, port), timeout=2).close()
                except OSError:
                    return False
                return True

            assert reaches(north) and reaches(south)
            status, body = await f.admin.call("POST", "/v1/admin/regions/north/cut")
            assert (status, body) == (200, {"region": "north", "cut": True}), body
            assert not reaches(north), "north is cut"
            assert reaches(south), "south is not"
            status, body = await f.admin.call("POST", "/v1/admin/regions/north/restore")
            assert (status, body) == (200, {"region": "north", "cut": False}), body
            assert reaches(north), "north is back, its routes with it"
            for server in servers.values():
                server.close()
    finally:
        await fabric.teardown()
    assert await fabric.leftovers() == []
