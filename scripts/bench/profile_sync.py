"""Profile sync benchmark: how long from an edit of ~/.bashrc in an environment to the fleet
holding it, on one real fleet (SQLite, the real local provider and agent).

Each edit writes new content to the environment's `~/.bashrc` (as the user editing there
would), then polls the user's `GET /v1/profile` every 10 ms until it shows the new sha256; the
figure is the time from the write to that answer, p50 / p99 over `--edits` edits (target: under
2 s; the agent first lets a burst of edits settle for `debounce_seconds`, 0.25 s by default).

Usage: scripts/bench/profile-sync [--edits 100]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from tests.conftest import Api, make_user, small_config  # noqa: E402

from leeward.fleet.main import running_fleet  # noqa: E402

POLL_SECONDS = 0.01
DEADLINE_SECONDS = 10.0


async def stored_sha(api: Api, path: str) -> str | None:
    status, body = await api.call("GET", "/v1/profile")
    assert status == 200, body
    return next((f["sha256"] for f in body["files"] if f["path"] == path), None)


async def edit_to_stored(api: Api, bashrc: Path, n: int) -> float:
    content = f"# edit {n} at {time.time_ns()}\nexport LEEWARD_BENCH={n}\n".encode()
    want = hashlib.sha256(content).hexdigest()
    started = time.perf_counter()
    await asyncio.to_thread(bashrc.write_bytes, content)
    while await stored_sha(api, ".bashrc") != want:
        if time.perf_counter() - started > DEADLINE_SECONDS:
            raise SystemExit(f"edit {n} not stored after {DEADLINE_SECONDS} s")
        await asyncio.sleep(POLL_SECONDS)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leeward-bench-sync-") as tmp:
        config = small_config(Path(tmp), f"sqlite+aiosqlite:///{tmp}/fleet.db", regions=1)
        config.provider.stop_agents_on_exit = True
        async with running_fleet(config) as (url, fleet), aiohttp.ClientSession() as http:
            api = Api(url, http, await make_user(fleet, "bench"))
            status, env = await api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
            )
            assert status == 202, env
            await api.wait_state(env["id"], {"running"})
            assert config.provider.data_dir is not None
            bashrc = config.provider.data_dir / env["id"] / "home" / ".bashrc"
            await edit_to_stored(api, bashrc, 0)  # warm up: the first upload, imports
            seconds = [await edit_to_stored(api, bashrc, n) for n in range(1, args.edits + 1)]
            await api.call("DELETE", f"/v1/environments/{env['id']}")
            await fleet.idle()
    ms = [s * 1000 for s in seconds]
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "edits": len(ms),
        "debounce_seconds": config.profile_store.debounce_seconds,
        "edit_to_stored_ms": {
            "p50": round(pct(ms, 50), 1),
            "p99": round(pct(ms, 99), 1),
            "mean": round(statistics.fmean(ms), 1),
            "max": round(max(ms), 1),
        },
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
