"""A fleet on the local fabric (`network.kind = "namespaces"`) with two real host agents, each in
its host's namespace, a devserver `box` on one of them, and alice's ssh files with `leeward
proxy` as ProxyCommand: what the live-migration and storm tests start from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leeward.providers.fabric import Fabric
from tests.conftest import RunningFleet, small_config, until
from tests.host.conftest import REGIONS, TRANSITS, free_network
from tests.host.kit import HostAgent, join
from tests.relay.conftest import proxied

NAMES = ["north-h1", "north-h2"]


@dataclass
class Namespaced:
    f: RunningFleet
    fabric: Fabric
    env: dict[str, Any]
    ssh_config: Path
    xdg: dict[str, str]
    sessions: Path
    """Where each `leeward proxy` keeps its status file."""

    async def ssh(self, command: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            str(self.ssh_config),
            "-o",
            "BatchMode=yes",
            "box",
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.xdg},
        )

    async def migrate(self) -> str:
        """Move `box` live to the other host, through the fleet; its new host once it runs."""
        _, now = await self.f.api.call("GET", f"/v1/environments/{self.env['id']}")
        target = NAMES[1] if now["host"] == NAMES[0] else NAMES[0]

        async def accepted() -> bool:
            # A loaded machine delays heartbeats and a cut stops them: a move to a host not
            # heard from lately is refused (409), and asked again once it is heard.
            status, body = await self.f.admin.call(
                "POST", f"/v1/admin/environments/{self.env['id']}/migrate", {"host": target}
            )
            assert status == 202 or "unreachable" in body["error"]["message"], body
            return status == 202

        await until(accepted, f"the move to {target} accepted", timeout=60)

        async def moved() -> bool:
            _, now = await self.f.api.call("GET", f"/v1/environments/{self.env['id']}")
            return now["state"] == "running" and now["host"] == target

        await until(moved, f"moved to {target}", timeout=60)
        assert await self.fabric.routed_to(self.env["address"]) == target, "the route moved"
        return target


@contextlib.asynccontextmanager
async def namespaced_fleet(
    start_fleet: Callable[..., Any], tmp_path: Path, database: str
) -> AsyncIterator[Namespaced]:
    config = small_config(tmp_path, database, regions=1, hosts=2, host_cpus=64, host_memory_gib=256)
    config.provider.kind = "hosts"
    config.heartbeat_seconds = 2.0  # the window (3 of them) holds on a loaded test machine
    config.network.kind = "namespaces"
    config.network.prefix = f"lg{secrets.token_hex(2)[:3]}"
    config.network.transit = free_network(TRANSITS)
    config.regions[0].network = free_network(REGIONS)
    assert config.provider.data_dir is not None
    fabric = Fabric(config.network.prefix, config.network.transit)
    agents = {name: HostAgent(tmp_path / "hosts" / name, name) for name in NAMES}
    try:
        async with start_fleet(config) as f:
            port = f.url.rsplit(":")[-1]
            assert f.fleet.public_url == f"http://{fabric.fleet_address}:{port}"
            await join(
                f.admin,
                f.fleet.public_url or "",
                agents,
                config.provider.data_dir,
                lambda index, name: {  # in its namespace, on its end of its link
                    "netns": str(fabric.namespace(name)),
                    "fabric_prefix": config.network.prefix,
                    "fabric_transit": str(config.network.transit),
                    "listen_host": str(fabric.transit_of(index)[1].ip),
                    "listen_port": 7070,
                },
            )
            status, env = await f.api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
            )
            assert status == 202, env
            env = await f.api.wait_state(env["id"], {"running"})
            assert await fabric.routed_to(env["address"]) == env["host"]

            home = tmp_path / "client"
            paths, xdg = await proxied(f.url, f.api, home, "box")
            yield Namespaced(
                f, fabric, env, paths.ssh_config, xdg, home / "xdg-state" / "leeward" / "sessions"
            )
    finally:
        for agent in agents.values():
            agent.stop()
        await fabric.teardown()
