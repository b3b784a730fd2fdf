"""Provisioning with a profile: a devserver for a user whose profile holds 200 files and three
features, against one for a user with an empty profile, on one real fleet (SQLite, the real
local provider and agents).

Runs alternate (empty, full, empty, full, ...) so both see the same machine noise; the figures
are medians and their ratio. Two times per run:
- create to ready: POST /v1/environments until the environment is `running` (the agent has
  applied the profile: every file is in the home before it says ready);
- create to set up: until every setup item (the three features) is installed too (they run
  after ready, so they never hold the environment back).

Usage: scripts/bench/provision [--runs 8] [--files 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import Api, make_user, small_config  # noqa: E402

from leeward.fleet.config import FeatureConfig  # noqa: E402
from leeward.fleet.main import running_fleet  # noqa: E402

FEATURES = [
    FeatureConfig(
        name="git-defaults",
        install="git config --global init.defaultBranch main\ngit config --global pull.rebase true",
        files={".config/git/ignore": "*.swp\n.DS_Store\n"},
    ),
    FeatureConfig(
        name="prompt",
        install="grep -q leeward-prompt ~/.bashrc 2>/dev/null || "
        'echo ". ~/.config/leeward-prompt/prompt.sh" >> ~/.bashrc',
        files={".config/leeward-prompt/prompt.sh": "PS1='\\u@\\h:\\w$ '\n"},
    ),
    FeatureConfig(
        name="tools",
        install="mkdir -p ~/.local/bin\n"
        "for t in a b c; do\n"
        "  printf '#!/bin/sh\\n' > ~/.local/bin/$t; chmod +x ~/.local/bin/$t\n"
        "done",
    ),
]


def profile_files(count: int) -> list[dict[str, Any]]:
    """Realistic dotfiles: a few rc files and many small files under .config, 200 B to 4 KiB."""
    files = []
    for i in range(count):
        path = (
            f".config/app{i % 20}/settings-{i}.conf"
            if i >= 4
            else [".bashrc", ".gitconfig", ".inputrc", ".vimrc"][i]
        )
        body = "".join(f"key{j} = value {i}-{j}\n" for j in range(10 + (i * 37) % 180))
        files.append(
            {
                "path": path,
                "content": base64.b64encode(body.encode()).decode(),
                "mode": 0o644,
                "modifiedAt": "2026-11-28T12:00:00Z",
            }
        )
    return files


async def provision(api: Api, steps: int) -> tuple[float, float]:
    started = time.perf_counter()
    status, body = await api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny"}
    )
    assert status in (200, 201, 202), body
    env_id = body["id"]
    ready_at = None
    while True:
        status, env = await api.call("GET", f"/v1/environments/{env_id}")
        now = time.perf_counter()
        if env["state"] == "failed":
            raise SystemExit(f"{env_id} failed: {env['statusMessage']}")
        if env["state"] == "running" and ready_at is None:
            ready_at = now
        installed = [i for i in env["setup"] if i["state"] == "installed"]
        failed = [i for i in env["setup"] if i["state"] == "failed"]
        if failed:
            raise SystemExit(f"{env_id}: a setup step failed: {failed}")
        if ready_at is not None and len(installed) == steps:
            done_at = now
            break
        if now - started > 120:
            raise SystemExit(f"{env_id} not set up after 120 s: {env}")
        await asyncio.sleep(0.01)
    await api.call("DELETE", f"/v1/environments/{env_id}")
    return ready_at - started, done_at - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leeward-bench-") as tmp:
        config = small_config(Path(tmp), f"sqlite+aiosqlite:///{tmp}/fleet.db", hosts=4)
        config.features = FEATURES
        config.provider.stop_agents_on_exit = True
        async with running_fleet(config) as (url, fleet), aiohttp.ClientSession() as http:
            empty = Api(url, http, await make_user(fleet, "empty"))
            full = Api(url, http, await make_user(fleet, "full"))
            files = profile_files(args.files)
            status, body = await full.call("POST", "/v1/profile/files", {"files": files})
            assert status == 200 and len(body["stored"]) == args.files, body
            status, body = await full.call(
                "PUT", "/v1/profile/config", {"features": [f.name for f in FEATURES]}
            )
            assert status == 200, body
            await provision(empty, 0)  # warm up: imports, the first agent's start
            times: dict[str, list[tuple[float, float]]] = {"empty": [], "full": []}
            for _ in range(args.runs):
                times["empty"].append(await provision(empty, 0))
                times["full"].append(await provision(full, len(FEATURES)))
            await fleet.idle()

    def med(name: str, index: int) -> float:
        return statistics.median(t[index] for t in times[name]) * 1000

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "runs": args.runs,
        "profile_files": args.files,
        "features": len(FEATURES),
        "ready_ms_p50": {"empty": round(med("empty", 0), 1), "full": round(med("full", 0), 1)},
        "set_up_ms_p50": {"empty": round(med("empty", 1), 1), "full": round(med("full", 1), 1)},
        "ready_ratio_full_over_empty": round(med("full", 0) / med("empty", 0), 2),
        "set_up_ratio_full_over_empty": round(med("full", 1) / med("empty", 1), 2),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
