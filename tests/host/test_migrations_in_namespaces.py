"""Live migrations at the network layer: a fleet on the local fabric (`network.kind =
"namespaces"`), two real host agents each in its host's namespace, a devserver moved between
them through the fleet's API while an `ssh` session through `leeward proxy` streams into
`sha256sum`. The route moves with each migration; the session ends with the digest of what was
sent and the shell it started with; a plain TCP connection to the environment made before a
move is reset after it (the new host's kernel knows nothing of it)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from leeward.client.credentials import Credentials, store_credentials
from leeward.providers.fabric import Fabric
from tests.conftest import small_config, ssh_access, until
from tests.host.test_fabric import REGIONS, TRANSITS, free_network
from tests.host.test_fleet_through_hosts import HostAgent, hosts
from tests.relay.conftest import LEEWARD

PROBE = Fabric.probe()
pytestmark = pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}")

MIGRATIONS = 5


async def test_a_session_streams_through_live_migrations_that_move_its_route(
    start_fleet, tmp_path: Path, sqlite_url
):
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=2)
    config.provider.kind = "hosts"
    config.network.kind = "namespaces"
    config.network.prefix = f"lg{secrets.token_hex(2)[:3]}"
    config.network.transit = free_network(TRANSITS)
    config.regions[0].network = free_network(REGIONS)
    assert config.provider.data_dir is not None
    fabric = Fabric(config.network.prefix, config.network.transit)
    names = ["north-h1", "north-h2"]
    agents = {name: HostAgent(tmp_path / "hosts" / name, name) for name in names}
    try:
        async with start_fleet(config) as f:
            assert f.fleet.public_url == f"http://{fabric.fleet_address}:{f.url.rsplit(':')[-1]}"
            for index, (name, agent) in enumerate(agents.items()):
                status, issued = await f.admin.call("POST", f"/v1/admin/hosts/{name}/token", {})
                assert status == 201, issued
                agent.configure(
                    f.fleet.public_url or "",
                    issued,
                    config.provider.data_dir,
                    netns=str(fabric.namespace(name)),
                    fabric_prefix=config.network.prefix,
                    fabric_transit=str(config.network.transit),
                    listen_host=str(fabric.transit_of(index)[1].ip),
                    listen_port=7070,
                )
                agent.start()

            async def joined() -> bool:
                for agent in agents.values():
                    assert agent.proc is not None and agent.proc.poll() is None, agent.log()
                return all(h["reachable"] for h in (await hosts(f.admin)).values())

            await until(joined, "both host agents joined from their namespaces", timeout=30)
            status, env = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
            )
            assert status == 202, env
            env = await f.api.wait_state(env["id"], {"running"})
            assert await fabric.routed_to(env["address"]) == env["host"]

            home = tmp_path / "client"
            paths = await ssh_access(f.api, home, "alice")
            xdg = {
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / "xdg-config"),
                "XDG_STATE_HOME": str(home / "xdg-state"),
            }
            store_credentials(
                home / "xdg-config" / "leeward" / "credentials.toml",
                Credentials(fleet=f.url, token=f.api.token or ""),
            )
            proxy = f"{LEEWARD} proxy %n --known-hosts {paths.known_hosts}"
            text = paths.ssh_config.read_text()
            paths.ssh_config.write_text(
                text.replace("Host box ", f"Host box \n    ProxyCommand {proxy}\nHost box ")
            )
            session = await asyncio.create_subprocess_exec(
                "ssh",
                "-F",
                str(paths.ssh_config),
                "-o",
                "BatchMode=yes",
                "box",
                "echo $$; sha256sum; echo $$",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **xdg},
            )
            assert session.stdin is not None and session.stdout is not None
            shell = (await session.stdout.readline()).strip()
            assert shell.isdigit(), shell
            sent = hashlib.sha256()
            streaming = asyncio.Event()
            done = asyncio.Event()

            async def feed() -> None:
                assert session.stdin is not None
                while not done.is_set():
                    chunk = os.urandom(64 * 1024)
                    session.stdin.write(chunk)
                    sent.update(chunk)
                    await session.stdin.drain()
                    streaming.set()
                    await asyncio.sleep(0.01)
                session.stdin.close()

            feeder = asyncio.create_task(feed())
            await streaming.wait()

            # A plain TCP connection to the environment's SSH port, made before a move.
            direct = socket.create_connection((env["address"], env["sshPort"]), timeout=5)
            banner = b""
            while not banner.endswith(b"\n"):
                banner += await asyncio.to_thread(direct.recv, 256)

            where = env["host"]
            for _ in range(MIGRATIONS):
                target = names[1] if where == names[0] else names[0]
                status, moving = await f.admin.call(
                    "POST", f"/v1/admin/environments/{env['id']}/migrate", {"host": target}
                )
                assert status == 202, moving

                async def moved(target: str = target) -> bool:
                    _, now = await f.api.call("GET", f"/v1/environments/{env['id']}")
                    return now["state"] == "running" and now["host"] == target

                await until(moved, f"moved to {target}", timeout=30)
                assert await fabric.routed_to(env["address"]) == target, "the route moved"
                where = target
                await asyncio.sleep(0.2)  # a little streaming between moves
            done.set()
            await feeder
            out, err = await asyncio.wait_for(session.communicate(), 60)
            digest, again = out.decode().split()[:2][0], out.decode().split()[-1]
            assert session.returncode == 0, err.decode()
            assert digest == sent.hexdigest(), "every byte, in order"
            assert again.encode() == shell, "the same shell, start to end"

            # The plain connection was made to the first host; its segments now reach another,
            # which resets it: ECONNRESET (EPIPE when the reset is in before the send).
            try:
                direct.sendall(b"SSH-2.0-probe\r\n")
                got: bytes | OSError = await asyncio.to_thread(direct.recv, 4096)
            except OSError as exc:
                got = exc
            assert isinstance(got, OSError) and got.errno in (errno.ECONNRESET, errno.EPIPE), got
            direct.close()
    finally:
        for agent in agents.values():
            agent.stop()
        await fabric.teardown()
