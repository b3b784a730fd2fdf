"""Daemon benchmark: the real `leeward daemon --stdio` against a real fleet (its own process).

Figures, each from one run on one machine:
- start: process spawn to the `initialize` result, over `--starts` daemons (target <= 400 ms);
  with Python's own start (`python -c pass`) and the import of pygls's server (lsprotocol's
  ~900 classes) beside it, measured in the same run, to say where the time goes;
- idle resident memory (VmRSS) of a connected daemon watching two environments (target <= 80 MB);
- idle CPU over `--idle-seconds` (target: close to 0), as a share of one core;
- notification latency: from an environment's state change in the fleet (its `updatedAt`, set
  before the commit) to the `leeward/health` notification saying so, over `--changes` changes
  (create/delete cycles give four each; target p99 <= 200 ms).

Usage: scripts/bench/daemon [--starts 20] [--idle-seconds 60] [--changes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct, with_fleet  # noqa: E402
from tests.cli.sandbox import LEEWARD, make_sandbox  # noqa: E402
from tests.daemon.kit import DaemonClient  # noqa: E402

from leeward.client.api import FleetClient  # noqa: E402
from leeward.client.credentials import Credentials, store_credentials  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def command_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    return round(pct(times, 50), 1)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-daemon-"))
    (tmp / "user").mkdir()
    sandbox = make_sandbox(tmp / "user")
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }

    async def body(api: Any, store: Any) -> None:
        store_credentials(sandbox.paths.credentials, Credentials(fleet=api.url, token=api.token))
        options = {"probeIntervalSeconds": 5.0}

        # -- start to initialize
        starts = []
        for _ in range(args.starts):
            daemon = DaemonClient(sandbox)
            started = time.perf_counter()
            await daemon.start(options)
            starts.append((time.perf_counter() - started) * 1000)
            await daemon.stop()
        results["start_to_initialize_ms"] = {
            "n": len(starts),
            "p50": round(pct(starts, 50), 1),
            "p99": round(pct(starts, 99), 1),
        }
        py = sys.executable
        results["for_comparison_p50_ms"] = {
            "python -c pass": command_ms([py, "-c", "pass"], 10),
            "import pygls.lsp.server (any pygls server's floor)": command_ms(
                [py, "-c", "import pygls.lsp.server"], 10
            ),
            "import leeward.daemon.server": command_ms(
                [py, "-c", "import leeward.daemon.server"], 10
            ),
            "leeward --help": command_ms([str(LEEWARD), "--help"], 10),
        }

        # -- idle memory and CPU, watching two environments
        daemon = DaemonClient(sandbox)
        await daemon.start(options)
        try:
            made = []
            for _ in range(2):
                env = await daemon.request(
                    "leeward/environments/create",
                    {"request": {"kind": "devserver", "flavor": "tiny"}},
                )
                made.append(env)
            await daemon.until(
                lambda: all(
                    (r := daemon.last_health(e["id"])) and r["state"] == "healthy" for e in made
                ),
                what="not healthy",
            )
            pid = daemon.client._server.pid  # type: ignore[union-attr]
            await asyncio.sleep(2)
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            results["idle"] = {
                "rss_mib": round(rss_mib(pid), 1),
                "cpu_share_of_one_core_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 3),
                "seconds": round(wall1 - wall0, 1),
                "watched_environments": len(made),
                "probe_interval_seconds": options["probeIntervalSeconds"],
            }
            for env in made:
                await daemon.request("leeward/environments/delete", {"environment": env["id"]})

            # -- state change in the fleet to health notification
            changed_at: dict[tuple[str, str], float] = {}
            stream_ready = asyncio.Event()

            async def follow() -> None:
                async with FleetClient(api.url, api.token) as fleet:
                    async for event in fleet.events():
                        stream_ready.set()
                        if event.environment is not None:
                            key = (event.environment.id, event.environment.state.value)
                            changed_at[key] = event.environment.updated_at.timestamp()

            follower = asyncio.get_running_loop().create_task(follow())
            await asyncio.wait_for(stream_ready.wait(), 10)
            arrivals: dict[tuple[str, str], float] = {}
            seen = len(daemon.health)

            def collect() -> None:
                records = zip(daemon.health[seen:], daemon.health_arrived[seen:], strict=True)
                for record, arrived in records:
                    key = (record["environmentId"], record["environmentState"])
                    arrivals.setdefault(key, arrived)

            cycles = max(1, args.changes // 4)
            for _ in range(cycles):
                env = await daemon.request(
                    "leeward/environments/create",
                    {"request": {"kind": "devserver", "flavor": "tiny"}},
                )
                await daemon.request("leeward/environments/delete", {"environment": env["id"]})
                await daemon.until(
                    lambda env_id=env["id"]: (
                        (r := daemon.last_health(env_id)) and r["environmentState"] == "deleted"
                    ),
                    timeout=60,
                    what="delete not seen",
                )
            await asyncio.sleep(1)
            collect()
            follower.cancel()
            latencies = [
                (arrivals[key] - changed_at[key]) * 1000 for key in arrivals if key in changed_at
            ]
            results["state_change_to_health_notification_ms"] = {
                "n": len(latencies),
                "p50": round(pct(latencies, 50), 1),
                "p99": round(pct(latencies, 99), 1),
                "max": round(max(latencies), 1),
            }
        finally:
            await daemon.stop()

    await with_fleet("sqlite", tmp, body)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--changes", type=int, default=100)
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
