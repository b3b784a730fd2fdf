"""Many sessions through live migrations and a region cut (a storm): `SESSIONS` ssh sessions
through `leeward proxy`, each a `cat` echoing what it is sent, while the devserver is moved
`MOVES` times each way between its region's two hosts and, in the middle, the region's links are
cut for `CUT` seconds and restored. No session ends; each gets back every byte it sent, in
order; while the region is cut, `leeward status` shows them resuming (the status bar's
"reconnecting"). Short here; scripts/chaos (LEEWARD_FULL) runs 100 sessions, 10 moves each way
and a 10 s cut, and prints its figures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from leeward.providers.fabric import Fabric
from tests.conftest import until
from tests.host.namespaced import Namespaced, namespaced_fleet
from tests.relay.conftest import LEEWARD

PROBE = Fabric.probe()
FULL = bool(os.environ.get("LEEWARD_FULL"))
SESSIONS, MOVES, CUT = (100, 10, 10.0) if FULL else (8, 2, 3.0)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PROBE[0], reason=f"no network namespaces: {PROBE[1]}"),
]


class Echo:
    """One `cat` session: what it sent and what came back, as digests and counts."""

    def __init__(self, n: Namespaced) -> None:
        self.n = n
        self.sent, self.back = hashlib.sha256(), hashlib.sha256()
        self.sent_bytes = self.back_bytes = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, done: asyncio.Event) -> int:
        self.proc = proc = await self.n.ssh("cat")
        assert proc.stdin is not None and proc.stdout is not None

        async def read() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                self.back.update(chunk)
                self.back_bytes += len(chunk)

        reader = asyncio.create_task(read())
        while not done.is_set():
            chunk = os.urandom(4096)
            proc.stdin.write(chunk)
            self.sent.update(chunk)
            self.sent_bytes += len(chunk)
            await proc.stdin.drain()
            await asyncio.sleep(0.05)  # pacing a stream (4 KiB every 50 ms), not a wait
        proc.stdin.close()
        async with asyncio.timeout(120):
            await reader
            return await proc.wait()


async def leeward_status(n: Namespaced) -> list[str]:
    """The sessions' states as `leeward status` shows them (the daemon reads the same files
    for the status bar, where `resuming` reads "reconnecting")."""
    proc = await asyncio.create_subprocess_exec(
        LEEWARD,
        "status",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **n.xdg},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [session["state"] for session in json.loads(out)]


def states(sessions: Path) -> list[str]:
    found = []
    for path in sessions.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text())["state"])
    return found


async def test_sessions_ride_through_migrations_and_a_region_cut(
    start_fleet, tmp_path: Path, sqlite_url
):
    async with namespaced_fleet(start_fleet, tmp_path, sqlite_url) as n:
        done = asyncio.Event()
        echoes = [Echo(n) for _ in range(SESSIONS)]
        runs = [asyncio.create_task(e.run(done)) for e in echoes]
        await until(
            lambda: states(n.sessions).count("connected") == SESSIONS,
            "every session connected",
            timeout=120,
        )
        started = time.monotonic()
        moves = []
        for i in range(2 * MOVES):
            began = time.monotonic()
            await n.migrate()
            moves.append(time.monotonic() - began)
            if i == MOVES:  # the storm, in the middle
                status, body = await n.f.admin.call("POST", "/v1/admin/regions/north/cut")
                assert status == 200, body

                async def resuming() -> bool:
                    return "resuming" in await leeward_status(n)

                cut_at = time.monotonic()
                await until(resuming, "`leeward status` showing sessions resuming", timeout=30)

                async def storm_over(cut_at: float = cut_at) -> bool:  # no session ends meanwhile
                    assert all(e.proc and e.proc.returncode is None for e in echoes), "ended"
                    return time.monotonic() - cut_at >= CUT

                await until(storm_over, f"a {CUT:g} s cut", timeout=CUT + 30)
                status, body = await n.f.admin.call("POST", "/v1/admin/regions/north/restore")
                assert status == 200, body
                restored = time.monotonic()
                await until(
                    lambda: states(n.sessions).count("connected") == SESSIONS,
                    "every session back",
                    timeout=60,
                )
                back = time.monotonic() - restored
        done.set()
        codes = await asyncio.gather(*runs)
        assert codes == [0] * SESSIONS, codes
        for e in echoes:
            assert e.back_bytes == e.sent_bytes, (e.sent_bytes, e.back_bytes)
            assert e.back.hexdigest() == e.sent.hexdigest(), "every byte back, in order"
        print(
            f"\nstorm: {SESSIONS} sessions, {2 * MOVES} live moves "
            f"(each {min(moves):.2f}-{max(moves):.2f} s), a {CUT:g} s region cut; every "
            f"session back {back:.2f} s after the restore; "
            f"{sum(e.sent_bytes for e in echoes) / 1e6:.1f} MB echoed in "
            f"{time.monotonic() - started:.1f} s; none ended, none lost a byte"
        )
