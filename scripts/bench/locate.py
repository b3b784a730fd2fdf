"""Finding an environment: locate() against a real fleet (in this process) and a real agent.

A "connect" is one `Finder.locate()`: the race of the fleet API, the zone's DNS and the address
cache, ending with the SSH handshake that verifies the winner's host certificate. It is timed
with the fleet's DNS serving, stopped (closed) and black-holed (open, never answering), each
with the cache warm and the API up, the cache warm and the API hung (only the cache and DNS can
answer), and the cache cold (the API and DNS). Target: black-holed adds <= 300 ms.

Usage: scripts/bench/locate [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from tests.conftest import Api, make_user, small_config, ssh_access  # noqa: E402

from leeward.client.locate import AddressCache, Finder, host_certificate_verifier  # noqa: E402
from leeward.fleet.main import running_fleet  # noqa: E402
from leeward_protocol.fleet import Role  # noqa: E402


@contextlib.asynccontextmanager
async def hung_api() -> AsyncIterator[str]:
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def import_ms(module: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        out = (
            subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {module}"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stderr.strip()
            .splitlines()
        )
        times.append(int(out[-1].split("|")[1]) / 1000)
    return round(statistics.median(times), 1)


async def bench(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        config = small_config(tmp, f"sqlite+aiosqlite:///{tmp / 'fleet.db'}", regions=1)
        config.provider.stop_agents_on_exit = True
        async with running_fleet(config) as (url, fleet), aiohttp.ClientSession() as http:
            alice = Api(url, http, await make_user(fleet, "alice"))
            admin = alice.as_(await make_user(fleet, "root-admin", Role.ADMIN))
            _, env = await alice.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
            )
            await alice.wait_state(env["id"], {"running"})
            paths = await ssh_access(alice, tmp / "alice", "alice")
            verify = host_certificate_verifier(paths.known_hosts)
            warm = AddressCache(tmp / "warm.json", url)
            first = await Finder(url, alice.token, warm, verify).locate("box")
            assert first.address
            _, catalog = await alice.call("GET", "/v1/catalog")
            regions = [r["name"] for r in catalog["regions"]]
            warm.remember_fleet(catalog["zone"], catalog["dns"], regions)

            fresh = iter(range(10**6))

            async def run(api_url: str, cold: bool) -> tuple[list[float], dict[str, int]]:
                times, winners = [], {}
                for _ in range(rounds):
                    cache = warm
                    if cold:  # knows the fleet (zone, DNS, regions), not the environment
                        cache = AddressCache(tmp / f"cold-{next(fresh)}.json", url)
                        cache.remember_fleet(catalog["zone"], catalog["dns"], regions)
                    found = await Finder(api_url, alice.token, cache, verify).locate("box")
                    times.append(found.seconds)
                    winners[found.source] = winners.get(found.source, 0) + 1
                return times, winners

            results: dict[str, Any] = {}
            for mode in ("serving", "closed", "black-hole"):
                if mode == "serving":
                    await admin.call("POST", "/v1/admin/dns/start")
                else:
                    body = {"blackHole": mode == "black-hole"}
                    await admin.call("POST", "/v1/admin/dns/stop", body)
                async with hung_api() as hung:
                    for case, api_url, cold in (
                        ("warm cache, API up", url, False),
                        ("warm cache, API hung", hung, False),
                        ("cold cache, API up", url, True),
                    ):
                        times, winners = await run(api_url, cold)
                        results[f"DNS {mode}: {case}"] = {**ms(times), "winners": winners}
            await admin.call("POST", "/v1/admin/dns/start")
    ratios = {}
    for case in ("warm cache, API up", "warm cache, API hung", "cold cache, API up"):
        up = results[f"DNS serving: {case}"]["p50_ms"]
        holed = results[f"DNS black-hole: {case}"]["p50_ms"]
        ratios[case] = {"ratio": round(holed / up, 2), "added_ms": round(holed - up, 1)}
    return {
        "machine": f"{platform.machine()} {platform.python_version()}",
        "rounds": rounds,
        "connects": results,
        "black_hole_vs_serving_p50": ratios,
        "import_ms": {
            "leeward.client.locate": import_ms("leeward.client.locate"),
            "asyncssh (the verifier)": import_ms("asyncssh"),
            "aiohttp (avoided)": import_ms("aiohttp"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.rounds)), indent=2))


if __name__ == "__main__":
    main()
