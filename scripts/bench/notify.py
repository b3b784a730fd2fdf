"""Telling people, editor side: from an announcement or a notification created in a real fleet to
the real daemon (`leeward daemon --stdio`, its own process) telling its client over stdio.

Figures, each over `--samples` (the daemon's long poll of the fleet's inbox, as in VS Code):
- announcement posted, active at once: its `createdAt` (set by the fleet before its commit) to
  the first `leeward/announcements` that lists it;
- announcement scheduled `--ahead` seconds ahead: its `startsAt` (or its `createdAt` when the
  POST took longer than that) to the first list with it (the long poll wakes at a scheduled
  start);
- notification created (`notify()` in the fleet's store, committed, as every producer does):
  its `createdAt` to the `leeward/notifications` that carries it.
The status bar of a real workbench is the e2e test's (tests/e2e/test_vscode.py records its
`statusShownAfterStartMs`); email and webhook delivery are the notification pipeline's.

The fleet runs in this process (the notifications are written through its own store, so that
its commit wakes the long poll as a producer's would); the daemon is a process of its own.

Each sample waits `--gap` after the one before, so that it finds the daemon's long poll waiting
(as a real announcement does); `--gap 0` posts back to back.

Usage: scripts/bench/notify [--samples 50] [--ahead 1.0] [--gap 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from tests.cli.sandbox import make_sandbox  # noqa: E402
from tests.conftest import Api, make_user, small_config  # noqa: E402
from tests.daemon.kit import DaemonClient  # noqa: E402

from leeward.client.credentials import Credentials, store_credentials  # noqa: E402
from leeward.fleet.main import running_fleet  # noqa: E402
from leeward.fleet.notify.outbox import notify  # noqa: E402
from leeward_protocol.fleet import Role  # noqa: E402
from leeward_protocol.notify import NotificationKind  # noqa: E402


def figures(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "over_250_ms": sum(1 for m in ms if m > 250),
    }


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-notify-"))
    (tmp / "user").mkdir()
    sandbox = make_sandbox(tmp / "user")
    config = small_config(tmp, f"sqlite+aiosqlite:///{tmp / 'fleet.db'}", regions=1, hosts=1)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": f"scripts/bench/notify --samples {args.samples} --ahead {args.ahead:g} "
        f"--gap {args.gap:g}",
    }
    async with (
        running_fleet(config) as (url, fleet),
        aiohttp.ClientSession() as http,
    ):
        alice = await make_user(fleet, "alice")
        admin = Api(url, http, await make_user(fleet, "ops", Role.ADMIN))
        store_credentials(sandbox.paths.credentials, Credentials(fleet=url, token=alice))
        daemon = DaemonClient(sandbox)
        await daemon.start({"logLevel": "warning"})
        try:
            await daemon.until(lambda: daemon.announcements, 30, "the first inbox answer")

            async def seen(key: tuple[str, int, int]) -> float:
                await daemon.until(lambda: key in daemon.first_seen, 30, f"{key} in the client")
                return daemon.first_seen[key]

            async def announce(body: dict[str, Any]) -> dict[str, Any]:
                status, posted = await admin.call("POST", "/v1/admin/announcements", body)
                assert status in (200, 201), posted
                return dict(posted)

            async def withdraw(posted: dict[str, Any]) -> None:
                status, body = await admin.call("DELETE", f"/v1/admin/announcements/{posted['id']}")
                assert status == 200, body

            now_ms: list[float] = []
            for i in range(args.samples):
                posted = await announce({"text": f"Bench announcement {i}"})
                arrived = await seen(("announcement", posted["id"], posted["revision"]))
                now_ms.append((arrived - at(posted["createdAt"])) * 1000)
                await withdraw(posted)
                await asyncio.sleep(args.gap)
            results["announcement_posted_to_client"] = figures(now_ms)

            ahead_ms: list[float] = []
            late = 0
            for i in range(args.samples):
                starts = datetime.now(UTC) + timedelta(seconds=args.ahead)
                posted = await announce(
                    {"text": f"Bench scheduled {i}", "startsAt": starts.isoformat()}
                )
                arrived = await seen(("announcement", posted["id"], posted["revision"]))
                # A POST slower than `--ahead` commits after the start: from its commit then.
                shown_from = max(starts.timestamp(), at(posted["createdAt"]))
                late += at(posted["createdAt"]) > starts.timestamp()
                ahead_ms.append((arrived - shown_from) * 1000)
                await withdraw(posted)
                await asyncio.sleep(args.gap)
            results["announcement_start_to_client"] = {
                **figures(ahead_ms),
                "created_after_their_start": late,
            }

            notified_ms: list[float] = []
            for i in range(args.samples):
                created = fleet.clock.now()
                async with fleet.store.write() as session:
                    row = await notify(
                        session,
                        fleet.config,
                        created,
                        user="alice",
                        kind=NotificationKind.SHARE,
                        data={"by": "bob", "environment": f"box-{i}"},
                    )
                    assert row is not None
                    ident = row.id
                arrived = await seen(("notification", ident, 0))
                notified_ms.append((arrived - created.timestamp()) * 1000)
                await daemon.request("leeward/notifications/seen", {"ids": [ident]})
                await asyncio.sleep(args.gap)
            results["notification_created_to_client"] = figures(notified_ms)
        finally:
            await daemon.stop()
            await fleet.idle()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--ahead", type=float, default=1.0, help="seconds a scheduled one starts")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.25,
        help="seconds between samples, so that each finds the daemon's long poll waiting "
        "(0: back to back)",
    )
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
