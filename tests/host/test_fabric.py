"""The local fleet's network for real: namespaces, veth pairs, routes and sockets. Each test has a
prefix, a transit network and region networks of its own (all in 198.18.0.0/15, never routed on
the internet), and its fabric is torn down after it even when it fails."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from leeward.common import netns
from leeward.providers.fabric import UPLINK, Fabric
from tests.host.conftest import REGIONS, free_network, routed_networks

PROBE = Fabric.probe()
pytestmark = pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}")

SIOCGSKNS = 0x894C  # linux/sockios.h: a socket's network namespace, as a descriptor
WAIT = 5.0  # every wait for something that should happen is bounded by this


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=WAIT)


async def region(fabric: Fabric, name: str) -> IPv4Network:
    network = free_network(REGIONS, list((await fabric.regions()).values()))
    await fabric.add_region(name, network)
    return network


def listen_in(fabric: Fabric, host: str, address: IPv4Address, port: int = 0) -> socket.socket:
    """A TCP listener on `address` made inside `host`'s namespace."""
    server = netns.socket_in(fabric.namespace(host))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((str(address), port))
    server.listen()
    server.settimeout(WAIT)
    return server


def connect(address: IPv4Address, port: int) -> socket.socket:
    """A connection from this process, in the root namespace: a client of the network."""
    return socket.create_connection((str(address), port), timeout=WAIT)


def refusal(address: IPv4Address, port: int) -> int | None:
    """The errno a connection attempt to `address` fails with (None: it did not fail)."""
    try:
        connect(address, port).close()
    except OSError as error:
        return error.errno
    return None


def namespace_of(sock: socket.socket) -> str:
    """The network namespace `sock` belongs to, as the kernel says (ioctl SIOCGSKNS)."""
    descriptor = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        return f"net:[{os.fstat(descriptor).st_ino}]"
    finally:
        os.close(descriptor)


def resets_sent(fabric: Fabric, host: str) -> int:
    """How many TCP resets `host`'s kernel has sent (Tcp OutRsts in its /proc/net/snmp)."""
    command = ["ip", "netns", "exec", fabric.namespace(host).name, "cat", "/proc/net/snmp"]
    snmp = subprocess.run(command, capture_output=True, text=True, timeout=WAIT, check=True)
    header, values = (line.split() for line in snmp.stdout.splitlines() if line.startswith("Tcp:"))
    return int(values[header.index("OutRsts")])


def echo(client: socket.socket, server: socket.socket, data: bytes) -> None:
    client.sendall(data)
    assert server.recv(len(data)) == data


def test_socket_in_makes_the_socket_there_and_leaves_the_thread_where_it_was() -> None:
    name = f"lt{secrets.token_hex(3)}-alone"
    path = Path("/run/netns") / name
    assert ip("netns", "add", name).returncode == 0, "cannot make a namespace"
    try:
        before = netns.current("thread-self")
        outcome: list[object] = []

        def in_a_thread() -> None:
            with netns.socket_in(path) as inside:
                outcome.append(namespace_of(inside))
            outcome.append(netns.current("thread-self"))

        worker = threading.Thread(target=in_a_thread)
        worker.start()
        worker.join(WAIT)
        assert outcome == [netns.of(path), before]
        assert netns.current("thread-self") == netns.current() == before
        assert netns.of(path) != before
        with pytest.raises(FileNotFoundError):
            netns.socket_in(path.with_name(f"{name}-missing"))
        assert netns.current("thread-self") == before
    finally:
        ip("netns", "delete", name)


async def test_a_client_of_the_network_reaches_an_environment_on_its_host(fabric: Fabric) -> None:
    network = await region(fabric, "r1")
    await fabric.ensure_host("a", "r1", 0)
    address = network[10]
    await fabric.attach(address, "a")
    host_end = fabric.transit_of(0)[1].ip
    route = ip("route", "get", str(address)).stdout
    assert f"{address} via {host_end} dev {fabric.prefix}r0 src {fabric.fleet_address}" in route
    assert await fabric.where(address) == "a" and await fabric.routed_to(address) == "a"
    with socket.socket() as here, pytest.raises(OSError, match="assign") as refused:
        here.bind((str(address), 0))  # the address is the host's, not the root namespace's
    assert refused.value.errno == errno.EADDRNOTAVAIL

    # Strict reverse-path filtering in the host passes it all: every route points back.
    strict = ["net.ipv4.conf.all.rp_filter=1", f"net.ipv4.conf.{UPLINK}.rp_filter=1"]
    assert ip("netns", "exec", fabric.namespace("a").name, "sysctl", "-qw", *strict).returncode == 0
    with listen_in(fabric, "a", address) as server:
        port = server.getsockname()[1]
        with connect(address, port) as client:
            accepted, peer = server.accept()
            with accepted:
                # Clients of the network come from the fleet's address, whatever the host.
                assert client.getsockname()[0] == peer[0] == str(fabric.fleet_address)
                assert client.getpeername() == (str(address), port)
                echo(client, accepted, b"ping")
                echo(accepted, client, b"pong")


CALL_THE_FLEET = """
import os, socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    s.sendall(b"hello")
    print(s.getsockname()[0], os.stat("/proc/self/ns/net").st_ino)
"""


async def test_a_process_on_a_host_reaches_the_fleet(fabric: Fabric) -> None:
    await region(fabric, "r1")
    await fabric.ensure_host("a", "r1", 3)
    with socket.create_server((str(fabric.fleet_address), 0)) as server:
        server.settimeout(WAIT)
        port = server.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *("ip", "netns", "exec", fabric.namespace("a").name, sys.executable),
            *("-c", CALL_THE_FLEET, str(fabric.fleet_address), str(port)),
            stdout=subprocess.PIPE,
        )
        accepted, peer = await asyncio.to_thread(server.accept)
        with accepted:
            assert accepted.recv(5) == b"hello"
        out, _ = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 0
    source, inode = out.decode().split()
    host_end = str(fabric.transit_of(3)[1].ip)
    assert source == peer[0] == host_end  # from the host's uplink, across its veth pair
    assert f"net:[{inode}]" == netns.of(fabric.namespace("a")) != netns.current()


async def test_a_live_migration_moves_the_route(fabric: Fabric) -> None:
    network = await region(fabric, "r1")
    await fabric.ensure_host("a", "r1", 0)
    await fabric.ensure_host("b", "r1", 1)
    address = network[7]
    await fabric.attach(address, "a")
    with listen_in(fabric, "a", address) as on_a:
        port = on_a.getsockname()[1]
        before = connect(address, port)
        held, _ = on_a.accept()
        echo(before, held, b"before")

        await fabric.begin_move(address)  # the blackout: routed nowhere, still on a
        assert await fabric.routed_to(address) is None and await fabric.where(address) == "a"
        # The region's unreachable route answers at once: "No route to host".
        assert refusal(address, port) == errno.EHOSTUNREACH

        await fabric.stage(address, "b")
        assert await fabric.where(address) == "b" and await fabric.routed_to(address) is None
        with listen_in(fabric, "b", address, port) as on_b:
            await fabric.attach(address, "b")
            assert await fabric.routed_to(address) == "b"
            assert (
                f"via {fabric.transit_of(1)[1].ip} dev {fabric.prefix}r1"
                in ip("route", "get", str(address)).stdout
            )
            with connect(address, port) as after:
                arrived, _ = on_b.accept()
                with arrived:
                    echo(after, arrived, b"after")
            on_a.setblocking(False)
            with pytest.raises(BlockingIOError):
                on_a.accept()  # nothing new ever came to a

            # The connection made to a before the move: its next segment goes to b, whose
            # kernel knows no such connection (b's listener does not own an established
            # 4-tuple) and answers with a reset. recv sees ECONNRESET; had we sent again
            # first, send would have seen EPIPE.
            resets = {host: resets_sent(fabric, host) for host in ("a", "b")}
            with before, held:
                before.sendall(b"still there?")
                with pytest.raises((ConnectionResetError, BrokenPipeError)) as reset:
                    before.recv(1)
                assert reset.value.errno in (errno.ECONNRESET, errno.EPIPE)
                assert resets_sent(fabric, "b") > resets["b"]
                assert resets_sent(fabric, "a") == resets["a"]


async def test_a_cut_region_is_unreachable_until_restored(fabric: Fabric) -> None:
    storm, calm = await region(fabric, "storm"), await region(fabric, "calm")
    await fabric.ensure_host("a", "storm", 0)
    await fabric.ensure_host("b", "storm", 1)
    await fabric.ensure_host("c", "calm", 2)
    x, y, z = storm[5], storm[6], calm[5]
    await fabric.attach(x, "a")
    await fabric.attach(y, "b")
    await fabric.attach(z, "c")
    with (
        listen_in(fabric, "a", x) as on_a,
        listen_in(fabric, "c", z, on_a.getsockname()[1]) as on_c,
        socket.create_server((str(fabric.fleet_address), 0)) as fleet,
    ):
        port = on_a.getsockname()[1]
        connect(x, port).close()
        on_a.accept()[0].close()

        await fabric.cut("storm")
        # The root's routes through the cut links are gone; the region's unreachable route
        # answers: "No route to host", at once.
        assert refusal(x, port) == errno.EHOSTUNREACH
        assert ip("route", "get", str(y)).returncode != 0
        assert await fabric.routed_to(x) is None and await fabric.where(x) == "a"
        connect(z, port).close()  # the other region is not touched
        on_c.accept()[0].close()
        # Inside, nothing is told: the uplink has lost its carrier, and a packet out is lost
        # without an error, so a connection to the fleet only times out.
        with netns.socket_in(fabric.namespace("a")) as inside:
            inside.settimeout(0.5)
            with pytest.raises(TimeoutError):
                inside.connect((str(fabric.fleet_address), fleet.getsockname()[1]))

        # A fabric that knows nothing (as after a restart) finds the routes in the system.
        await Fabric(fabric.prefix, fabric.transit).restore("storm")
        assert await fabric.routed_to(x) == "a" and await fabric.routed_to(y) == "b"
        with connect(x, port) as client:
            accepted, _ = on_a.accept()
            with accepted:
                echo(client, accepted, b"calm again")


async def test_a_restarted_fabric_finds_its_hosts_as_they_were(fabric: Fabric) -> None:
    network = await region(fabric, "r1")
    await fabric.ensure_host("a", "r1", 0)
    await fabric.ensure_host("b", "r1", 1)
    x, y = network[20], network[21]
    await fabric.attach(x, "a")
    await fabric.attach(y, "b")
    namespaces = {h: netns.of(fabric.namespace(h)) for h in ("a", "b")}
    links = json.loads(ip("-json", "link", "show", f"{fabric.prefix}r0").stdout)
    with listen_in(fabric, "a", x) as server:
        client = connect(x, server.getsockname()[1])
        accepted, _ = server.accept()
        with client, accepted:
            again = Fabric(fabric.prefix, fabric.transit)
            await again.start()
            await again.add_region("r1", network)
            await again.ensure_host("a", "r1", 0)
            await again.ensure_host("b", "r1", 1)
            assert await again.hosts() == {"a": "r1", "b": "r1"}
            assert await again.regions() == {"r1": network}
            assert {h: netns.of(again.namespace(h)) for h in ("a", "b")} == namespaces
            assert json.loads(ip("-json", "link", "show", f"{fabric.prefix}r0").stdout) == links
            assert await again.where(x) == "a" and await again.where(y) == "b"
            assert await again.routed_to(x) == "a" and await again.routed_to(y) == "b"
            echo(client, accepted, b"kept")  # the host was kept, and its connections

        # A host whose link is broken is mended, and the routes to its addresses with it.
        assert ip("link", "delete", f"{fabric.prefix}r1").returncode == 0
        assert await again.routed_to(y) is None and await again.where(y) == "b"
        await again.ensure_host("b", "r1", 1)
        assert await again.routed_to(y) == "b"
        # And one given another index moves to its transit addresses, routes and all.
        await again.ensure_host("b", "r1", 5)
        assert await again.routed_to(y) == "b" and await again.where(y) == "b"
        assert (
            f"via {again.transit_of(5)[1].ip} dev {again.prefix}r5 "
            in ip("route", "get", str(y)).stdout
        )
        assert ip("link", "show", f"{again.prefix}r1").returncode != 0
        with listen_in(again, "b", y) as server, connect(y, server.getsockname()[1]):
            server.accept()[0].close()


async def test_an_address_without_a_host_never_leaves_the_machine(fabric: Fabric) -> None:
    network = await region(fabric, "empty")
    for address in (network[1], network[200], fabric.transit[-2]):
        found = ip("route", "get", str(address))
        assert found.returncode != 0 and "No route to host" in found.stderr, found
        assert refusal(address, 22) == errno.EHOSTUNREACH
    unreachable = json.loads(ip("-json", "route", "show", "type", "unreachable").stdout)
    assert {str(network), str(fabric.transit)} <= {route["dst"] for route in unreachable}


async def test_teardown_leaves_nothing(fabric: Fabric) -> None:
    network = await region(fabric, "r1")
    await fabric.ensure_host("a", "r1", 0)
    await fabric.attach(network[3], "a")
    await fabric.teardown()
    await fabric.teardown()  # again, as the fixture will
    assert not [n for n in ip("netns", "list").stdout.split() if n.startswith(fabric.prefix)]
    assert fabric.prefix not in ip("link", "show").stdout
    for route in routed_networks():
        assert not route.overlaps(network) and not route.overlaps(fabric.transit), route
    assert await fabric.leftovers() == []
