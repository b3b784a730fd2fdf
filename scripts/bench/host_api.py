"""Create to SSH-ready through the host API against the fleet's own direct spawn: the same
devserver requests, on one machine, to a fleet that starts agents itself (provider "local") and
to one that asks real host agents (`leeward host serve`, two processes, signed commands over
HTTP on loopback). Each create is timed from POST /v1/environments to the first `ssh ... true`
that succeeds (real OpenSSH, certificates from the fleet). The two fleets take turns, one create
each, so both see the same machine noise; the figures are medians and their ratio.

Usage: scripts/bench/host_api [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import Api, make_user, run_ssh, small_config, ssh_access, until  # noqa: E402
from tests.host.kit import HostAgent, join  # noqa: E402

from leeward.fleet.main import running_fleet  # noqa: E402
from leeward_protocol.fleet import Role  # noqa: E402


@contextlib.asynccontextmanager
async def fleet(kind: str, tmp: Path, http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    directory = tmp / kind
    config = small_config(directory, f"sqlite+aiosqlite:///{directory / 'fleet.db'}", regions=1)
    config.provider.kind = kind  # type: ignore[assignment]
    config.provider.stop_agents_on_exit = True
    assert config.provider.data_dir is not None
    agents: dict[str, HostAgent] = {}
    async with running_fleet(config) as (url, running):
        try:
            user = Api(url, http, await make_user(running, "alice"))
            admin = Api(url, http, await make_user(running, "root-admin", Role.ADMIN))
            if kind == "hosts":
                names = [host.name for region in config.regions for host in region.hosts]
                agents = {name: HostAgent(directory / "hosts" / name, name) for name in names}
                await join(admin, url, agents, config.provider.data_dir)
            yield user, directory
        finally:
            for agent in agents.values():
                agent.stop()


async def create_to_ssh(api: Api, home: Path, n: int) -> float:
    started = time.perf_counter()
    name = f"bench{n}"
    status, env = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": name}
    )
    assert status == 202, env
    await api.wait_state(env["id"], {"running"}, timeout=120)
    paths = await ssh_access(api, home, "alice")

    async def answers() -> bool:
        code, _, _ = await run_ssh(paths, name, "true", timeout=30)
        return code == 0

    await until(answers, f"{name} answers ssh", timeout=60)
    elapsed = time.perf_counter() - started
    await api.call("DELETE", f"/v1/environments/{env['id']}")
    await api.wait_state(env["id"], {"deleted"}, timeout=60)
    return elapsed * 1000


async def bench(runs: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-host-api-"))
    times: dict[str, list[float]] = {"local": [], "hosts": []}
    async with (
        aiohttp.ClientSession() as http,
        fleet("local", tmp, http) as (local, local_dir),
        fleet("hosts", tmp, http) as (hosts, hosts_dir),
    ):
        for n in range(runs + 1):  # the first of each warms up (and is not counted)
            for kind, api, directory in (
                ("local", local, local_dir),
                ("hosts", hosts, hosts_dir),
            ):
                ms = await create_to_ssh(api, directory / "client", n)
                if n:
                    times[kind].append(ms)
    local_ms, hosts_ms = (statistics.median(times[k]) for k in ("local", "hosts"))
    return {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "runs": runs,
        "direct_spawn_create_to_ssh_ms_p50": round(local_ms, 1),
        "host_api_create_to_ssh_ms_p50": round(hosts_ms, 1),
        "ratio_host_api_over_direct": round(hosts_ms / local_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    print(json.dumps(asyncio.run(bench(parser.parse_args().runs)), indent=2))


if __name__ == "__main__":
    main()
