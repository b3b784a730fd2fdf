"""A live move in the local fleet's network: an environment's agent started in host A's network
namespace, its address routed to A; then the route moves to host B and the agent listens there.
Real `ssh` reaches it before and after; its processes (agent, sandbox, a background job) carry
on with the same pids; a direct TCP connection made before the move is reset by B; a connection
attempted while the route is away is refused (No route to host)."""

from __future__ import annotations

import asyncio
import errno
import socket
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from leeward.common import netns
from leeward.common.processes import pid_alive
from leeward.fleet.ca import CertificateAuthority
from leeward.providers.fabric import Fabric
from leeward.providers.local import LocalProvider
from tests.agent.kit import Fleet, Kit
from tests.host.conftest import REGIONS, free_network

PROBE = Fabric.probe()
pytestmark = pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}")


def connect(address: str, port: int) -> socket.socket:
    return socket.create_connection((address, port), timeout=5)


async def test_an_environment_moves_between_host_namespaces(fabric: Fabric, tmp_path: Path):
    network = free_network(REGIONS, list((await fabric.regions()).values()))
    await fabric.add_region("r", network)
    await fabric.ensure_host("a", "r", 0)
    await fabric.ensure_host("b", "r", 1)
    address = str(IPv4Network(network)[7])
    fleet = Fleet(ca=CertificateAuthority.generate(), tmp=tmp_path)
    kit = Kit(fleet, tmp_path)
    spec = fleet.spec(address=address, ssh_port=2222, host="a")
    provider = LocalProvider(tmp_path / "envs", netns=fabric.namespace("a"), start_timeout=30)
    try:
        await fabric.attach(address, "a")
        await provider.start(spec)
        pid = int((tmp_path / "envs" / spec.id / "agent.pid").read_text())
        assert netns.current(pid) == netns.of(fabric.namespace("a")), "started inside host a"
        ssh = kit.ssh(spec, kit.user("alice"))
        started = await ssh.run("ssh", "box", "nohup sleep 600 >/dev/null 2>&1 & echo $!")
        assert started.returncode == 0, started.stderr
        job = started.stdout.decode().strip()
        direct = await asyncio.to_thread(connect, address, spec.ssh_port)
        banner = b""
        while not banner.endswith(b"\n"):  # all of it: what is left unread is read later
            banner += await asyncio.to_thread(direct.recv, 256)
        assert banner.startswith(b"SSH-2.0-"), banner

        # The move: the route goes away (the blackout), the address lands on b, the agent
        # listens there, the route comes back through b.
        await fabric.begin_move(address)
        with pytest.raises(OSError, match="No route to host") as refused:
            await asyncio.to_thread(connect, address, spec.ssh_port)
        assert refused.value.errno == errno.EHOSTUNREACH, refused.value
        await fabric.stage(address, "b")
        await provider.attach(spec.id, fabric.namespace("b"))
        await fabric.attach(address, "b")
        assert await fabric.where(address) == "b" and await fabric.routed_to(address) == "b"

        after = await ssh.run("ssh", "box", f"kill -0 {job} && echo alive")
        assert (after.returncode, after.stdout.strip()) == (0, b"alive"), after.stderr
        assert pid_alive(pid), "the same agent, which moved"
        assert netns.current(pid) == netns.of(fabric.namespace("b"))
        # The connection made before the move reaches b now, which knows nothing of it: b's
        # kernel answers with a reset (ECONNRESET on the read after the send; EPIPE if the
        # reset is already in when the send is made).
        try:
            direct.sendall(b"SSH-2.0-probe\r\n")
            got = await asyncio.to_thread(direct.recv, 4096)
        except OSError as exc:
            got = exc
        assert isinstance(got, OSError) and got.errno in (errno.ECONNRESET, errno.EPIPE), got
        direct.close()
    finally:
        await provider.stop(spec.id)
