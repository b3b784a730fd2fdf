"""Allocation benchmark: 50 concurrent clients against a real fleet on SQLite or PostgreSQL.

Three figures, each from one run on one machine:
- warm-pool claim latency (POST /v1/environments for a container, answered 201 running; the
  claim includes the hand-over: a fresh host key and certificate pushed to the agent);
- devserver create-to-SSH-ready latency (POST until an SSH handshake with the new environment,
  host certificate verified, succeeds), with 50 clients at once and with one client alone;
- allocations per second: placement decisions answered by the API. Measured twice: with the real
  local provider (agents start in the background and compete for the same 2 cores) and with
  the provider left out (`--provider none`: every environment is placed, addressed and
  recorded exactly as usual, but no agent process is started), which isolates the allocator
  and the store.

Usage: scripts/bench/allocate [--database sqlite|postgresql] [--clients 50]
       [--phase claims|create|throughput] [--provider local|none]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import Api, fresh_postgres_database, make_user, small_config  # noqa: E402

from leeward.fleet.main import running_fleet  # noqa: E402
from leeward.providers.base import EnvironmentSpec  # noqa: E402
from leeward_protocol.fleet import Role  # noqa: E402


class NoAgents:
    """Places nothing anywhere: for measuring the allocator alone (`--provider none`)."""

    name = "none"
    isolates_owners = True  # the one user the benchmark runs as is alone anyway
    isolation = "none: no environment is started (the allocator alone)"

    async def start(self, spec: EnvironmentSpec) -> None:
        return None

    async def assign(self, spec: EnvironmentSpec) -> None:
        return None

    async def stop(self, environment_id: str) -> None:
        return None

    async def running(self, environment_ids: list[str]) -> set[str]:
        return set(environment_ids)

    async def close(self) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(name: str, seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "what": name,
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


async def ssh_ready(env: dict[str, Any], key: asyncssh.SSHKey, cert: Any, known: Any) -> None:
    async with asyncssh.connect(
        env["address"],
        env["sshPort"],
        username="bench",
        client_keys=[(key, cert)],
        known_hosts=known,
        host_key_alias=env["fqdn"],
        connect_timeout=30,
    ) as conn:
        await conn.run("true", check=True)


async def one_create_to_ssh(api: Api, key: Any, cert: Any, known: Any) -> float:
    started = time.perf_counter()
    status, env = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
    )
    assert status == 202, env
    env = await api.wait_state(env["id"], {"running"}, timeout=300)
    await ssh_ready(env, key, cert, known)
    return time.perf_counter() - started


async def wait_warm(store: Any, count: int, within: float) -> None:
    from sqlalchemy import func, select

    from leeward.fleet.store.models import EnvironmentRow

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with store.read() as session:
            n = await session.scalar(select(func.count()).where(EnvironmentRow.state == "warm"))
        if n and n >= count:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"the warm pool did not reach {count} in {within:.0f} s")


def _serve(config_json: str, provider: str, ready: Any, stop: Any) -> None:
    """The fleet in a process of its own (as in production): the load generator's CPU is
    not the fleet's."""
    from leeward.fleet.config import FleetConfig

    config = FleetConfig.model_validate_json(config_json)

    async def run() -> None:
        async with running_fleet(config, provider=NoAgents() if provider == "none" else None) as (
            url,
            fleet,
        ):
            token = await make_user(fleet, "bench", Role.USER)
            ready.send((url, token))
            await asyncio.get_running_loop().run_in_executor(None, stop.recv)
            await fleet.idle()

    asyncio.run(run())


async def with_fleet(
    database: str, tmp: Path, body: Any, provider: str = "local", **config_kwargs: Any
) -> Any:
    import multiprocessing

    async def run(url: str) -> Any:
        config = small_config(tmp, url, regions=1, hosts=2, **config_kwargs)
        config.provider.stop_agents_on_exit = True
        context = multiprocessing.get_context("spawn")
        ready_recv, ready_send = context.Pipe(duplex=False)
        stop_recv, stop_send = context.Pipe(duplex=False)
        child = context.Process(
            target=_serve, args=(config.model_dump_json(), provider, ready_send, stop_recv)
        )
        child.start()
        try:
            loop = asyncio.get_running_loop()
            fleet_url, token = await loop.run_in_executor(None, ready_recv.recv)
            # The store, read from this process too, for waiting on warm pools.
            from leeward.fleet.store.db import Store

            store = Store(url)
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
                    return await body(Api(fleet_url, http, token), store)
            finally:
                await store.close()
        finally:
            stop_send.send("stop")
            await asyncio.get_running_loop().run_in_executor(None, child.join, 120)

    if database == "postgresql":
        async with fresh_postgres_database() as url:
            return await run(url)
    return await run(f"sqlite+aiosqlite:///{tmp / 'fleet.db'}")


PHASES = ("claims", "create", "throughput")


async def bench(
    database: str,
    clients: int,
    phases: tuple[str, ...] = PHASES,
    providers: tuple[str, ...] = ("local", "none"),
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def credentials(api: Api) -> tuple[Any, Any]:
        _, body = await api.call(
            "POST", "/v1/ssh/certificate", {"publicKey": key.export_public_key().decode()}
        )
        cert = asyncssh.import_certificate(body["certificate"])
        _, cas = await api.call("GET", "/v1/ssh/authorities")
        known = asyncssh.import_known_hosts(f"@cert-authority * {cas['hostCa']}\n")
        return cert, known

    # 1. Warm-pool claims: a pool of `clients` containers, then `clients` claims at once.
    async def claims(api: Api, store: Any) -> None:
        await wait_warm(store, clients + 10, within=600)
        latencies: list[float] = []

        async def claim(into: list[float]) -> None:
            started = time.perf_counter()
            status, body = await api.call(
                "POST", "/v1/environments", {"kind": "container", "profile": "web"}
            )
            into.append(time.perf_counter() - started)
            assert status == 201, (status, body)

        alone: list[float] = []
        for _ in range(10):
            await claim(alone)
        results.append(summary("warm-pool claim, 1 client", alone))
        await asyncio.gather(*(claim(latencies) for _ in range(clients)))
        results.append(summary(f"warm-pool claim, {clients} clients at once", latencies))

    if "claims" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            await with_fleet(
                database,
                Path(tmp),
                claims,
                warm_pool=clients + 10,
                host_cpus=4 * clients + 40,
                host_memory_gib=16 * clients,
                pool_interval_seconds=3600,
            )

    # 2. Create-to-SSH-ready: one client alone (10 in a row), then `clients` at once.
    async def create_to_ssh(api: Api, store: Any) -> None:
        cert_known = await credentials(api)
        alone = [await one_create_to_ssh(api, key, *cert_known) for _ in range(10)]
        results.append(summary("devserver create-to-SSH-ready, 1 client", alone))
        together = await asyncio.gather(
            *(one_create_to_ssh(api, key, *cert_known) for _ in range(clients))
        )
        results.append(
            summary(f"devserver create-to-SSH-ready, {clients} clients at once", list(together))
        )

    if "create" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            await with_fleet(database, Path(tmp), create_to_ssh, host_cpus=8 * clients)

    # 3. Allocations per second, with and without agents being started.
    for label, provider, total in (
        ("local provider", "local", 4 * clients),
        ("allocator only, no agents", "none", 20 * clients),
    ):
        if "throughput" not in phases:
            break
        if provider not in providers:
            continue

        async def burst(api: Api, store: Any, total: int = total, label: str = label) -> None:
            queue = list(range(total))
            done: list[int] = []

            async def client() -> None:
                while queue:
                    queue.pop()
                    status, body = await api.call(
                        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
                    )
                    assert status == 202, (status, body)
                    done.append(1)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            elapsed = time.perf_counter() - started
            results.append(
                {
                    "what": f"allocations/s, {clients} clients, {label}",
                    "n": len(done),
                    "per_second": round(len(done) / elapsed, 1),
                }
            )

        with tempfile.TemporaryDirectory() as tmp:
            await with_fleet(
                database,
                Path(tmp),
                burst,
                provider,
                host_cpus=total,
                host_memory_gib=2 * total,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--phase", choices=PHASES, action="append", help="Run only these (default: all)."
    )
    parser.add_argument(
        "--provider",
        choices=["local", "none"],
        action="append",
        help="Throughput with real agents (local), the allocator alone (none), or both (default).",
    )
    args = parser.parse_args()
    if args.database == "postgresql":
        os.environ.setdefault(
            "LEEWARD_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        )
    results = asyncio.run(
        bench(
            args.database,
            args.clients,
            tuple(args.phase or PHASES),
            tuple(args.provider or ("local", "none")),
        )
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps({"database": args.database, "machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
