"""Reconnect after a real route move: a real agent in host a's network namespace (the local
fabric), the real OpenSSH client through `leeward proxy` with a `cat` session streaming, and
`--moves` live moves between hosts a and b as a host agent makes them (the route taken away, a
blackout of `--blackout` s, the address staged on the other host, the agent listening there,
the route back). From the path restored (the route back) to the first echoed byte through:
p50 / p99 / max (targets 10 / 30 ms). In the same run, the same figure for `--moves` blackouts
made by the agent itself (listeners closed, connections reset, as the loopback fleet does):
the figure this one is compared with. Root and `ip netns` needed.

Usage: scripts/bench/route_move [--moves 100] [--blackout 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from reconnect import blackout, reconnects, through_proxy  # noqa: E402
from tests.agent.kit import Fleet, Kit  # noqa: E402

from leeward.agent.config import AgentConfig  # noqa: E402
from leeward.fleet.ca import CertificateAuthority  # noqa: E402
from leeward.providers.fabric import Fabric  # noqa: E402
from leeward.providers.local import LocalProvider  # noqa: E402

REGION = IPv4Network("198.18.250.0/24")
TRANSIT = IPv4Network("198.19.250.0/24")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    ok, why = Fabric.probe()
    if not ok:
        raise SystemExit(f"route_move needs network namespaces: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-move-"))
    fabric = Fabric(f"bm{secrets.token_hex(2)[:3]}", TRANSIT)
    await fabric.start()
    await fabric.add_region("r", REGION)
    await fabric.ensure_host("a", "r", 0)
    await fabric.ensure_host("b", "r", 1)
    kit = Kit(Fleet(ca=CertificateAuthority.generate(), tmp=tmp), tmp)
    spec = kit.fleet.spec(owner="alice", address=str(REGION[10]), ssh_port=2222, host="a")
    provider = LocalProvider(tmp / "envs", start_timeout=30, netns=fabric.namespace("a"))
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "blackout_s": args.blackout,
    }
    where = ["a"]

    async def move() -> float:
        target = "b" if where[0] == "a" else "a"
        await fabric.begin_move(spec.address)
        await asyncio.sleep(args.blackout)
        await fabric.stage(spec.address, target)
        await provider.attach(spec.id, fabric.namespace(target))
        await fabric.attach(spec.address, target)
        where[0] = target
        return time.monotonic()

    try:
        await fabric.attach(spec.address, "a")
        await provider.start(spec)
        sock = AgentConfig.load(tmp / "envs" / spec.id / "agent.json").control_socket
        ssh = through_proxy(kit, spec)
        results["route_move"] = await reconnects(ssh, args.moves, move)
        results["agent_blackout"] = await reconnects(
            ssh, args.moves, lambda: blackout(sock, args.blackout)
        )
    finally:
        await provider.stop(spec.id)
        await fabric.teardown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=100)
    parser.add_argument("--blackout", type=float, default=0.2)
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
