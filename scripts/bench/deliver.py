"""Notification delivery, sink side: from a notification created in a real fleet (`notify()` in
its store, committed, as every producer does) to the email read back from a real SMTP server
(aiosmtpd), the chat post (apprise, `json://`) and the tracker's webhook (aiohttp), each on
loopback; p50/p99 per sink, for each delivery-loop interval (`[notify] poll_seconds`).

A delivery is sent at the first round of the loop after its commit, so the figure is about
half the interval plus the send (samples are spaced by `--gap` plus a random part of the
interval, so that they fall at random points of the loop's rounds); the interval is the
operator's trade between latency and one cheap read per sink and round.

Usage: scripts/bench/deliver [--samples 50] [--poll 1.0 --poll 0.1] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from tests.conftest import make_user, small_config  # noqa: E402
from tests.fleet.test_notifications import Mailbox, Webhooks, with_sinks  # noqa: E402

from leeward.fleet.main import running_fleet  # noqa: E402
from leeward.fleet.notify.outbox import notify  # noqa: E402
from leeward.fleet.store.models import PreferencesRow  # noqa: E402
from leeward_protocol.notify import NotificationKind  # noqa: E402


def figures(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "max_ms": round(max(ms), 1),
    }


class TimedMailbox(Mailbox):
    """When each email arrived (the SMTP server's DATA answered)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.times.append(time.time())
        return answer


class TimedWebhooks(Webhooks):
    """When each webhook arrived, by path and notification id."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, dict[int, float]] = {"chat": {}, "tracker": {}}

    async def handle(self, request: Any) -> Any:
        answer = await super().handle(request)
        got = self.answered[-1]
        ident = int(got["headers"]["Leeward-Notification-Id"].split("@")[0])
        self.times[got["path"].strip("/")][ident] = time.time()
        return answer


async def one_interval(poll: float, samples: int, gap: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-deliver-"))
    mailbox, webhooks = TimedMailbox(), TimedWebhooks()
    mailbox.controller.start()
    await webhooks.start()
    config = small_config(tmp, f"sqlite+aiosqlite:///{tmp / 'fleet.db'}", regions=1, hosts=1)
    with_sinks(config, mailbox, webhooks, poll_seconds=poll)
    arrived = webhooks.times
    try:
        async with running_fleet(config) as (_url, fleet):
            await make_user(fleet, "alice")
            async with fleet.store.write() as session:
                session.add(
                    PreferencesRow(
                        user="alice",
                        email="alice@example.test",
                        routes=json.dumps({"share": ["email", "chat", "tracker"]}),
                        updated_at=fleet.clock.now(),
                    )
                )
            created: dict[int, float] = {}
            emailed: dict[int, float] = {}
            for i in range(samples):
                stamp = fleet.clock.now()
                async with fleet.store.write() as session:
                    row = await notify(
                        session,
                        fleet.config,
                        stamp,
                        user="alice",
                        kind=NotificationKind.SHARE,
                        data={"by": "bob", "environment": f"box-{i}"},
                    )
                    assert row is not None
                    created[row.id] = stamp.timestamp()
                deadline = time.monotonic() + 30
                while not (
                    row.id in arrived["chat"]
                    and row.id in arrived["tracker"]
                    and len(mailbox.times) > i
                ):
                    assert time.monotonic() < deadline, f"notification {row.id} not delivered"
                    await asyncio.sleep(0.002)
                emailed[row.id] = mailbox.times[i]
                # A random phase against the loop's rounds, as real events have.
                await asyncio.sleep(gap + random.uniform(0, poll))
            await fleet.idle()
    finally:
        mailbox.controller.stop()
        await webhooks.stop()
    return {
        "email": figures([(emailed[n] - created[n]) * 1000 for n in created]),
        "chat": figures([(arrived["chat"][n] - created[n]) * 1000 for n in created]),
        "tracker": figures([(arrived["tracker"][n] - created[n]) * 1000 for n in created]),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": "scripts/bench/deliver --samples "
        + f"{args.samples} "
        + " ".join(f"--poll {p:g}" for p in args.poll)
        + f" --gap {args.gap:g}",
    }
    for poll in args.poll:
        results[f"poll_{poll:g}s"] = await one_interval(poll, args.samples, args.gap)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--poll", type=float, action="append", help="poll_seconds (repeat)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between samples")
    args = parser.parse_args()
    args.poll = args.poll or [1.0, 0.1]
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
