"""What the VS Code e2e tests share: the fleet they run (`leeward up` in a sandboxed home),
the sandboxed user's environment for code-server, the extension's .vsix, and the check of a
driver's result."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leeward.fleet.config import FleetConfig, HostConfig, RegionConfig, dump_config
from leeward_protocol.fleet import ContainerProfile, Flavor, FlavorKind, Hardware

from ..cli.sandbox import LEEWARD, Sandbox
from . import harness

EXTENSION = harness.REPO / "extension"
VSIX = "leeward-0.1.0.vsix"
"""What `npm run package` writes (extension/package.json's package script)."""
REGION = "north"


def e2e_network() -> str:
    """A /24 at random in 127.224.0.0/12: this area's range, apart from the other tests'."""
    return f"127.{random.randint(224, 239)}.{random.randint(0, 255)}.0/24"


def write_fleet_config(
    sandbox: Sandbox, *, hosts: int = 1, memory_gib: int = 1, **extra: Any
) -> FleetConfig:
    """One region of `hosts` hosts, a `small` devserver flavor (`memory_gib`), a `web` profile
    with no warm pool: only the environment the test creates runs an agent. `extra`: more of
    the config."""
    config = FleetConfig.model_validate(
        {
            **extra,
            "listen_port": harness.free_port(),
            "heartbeat_seconds": 1.0,
            "pool_interval_seconds": 0.5,
            "provider": {"ssh_port": harness.free_port(), "stop_agents_on_exit": True},
            "regions": [
                RegionConfig(
                    name=REGION,
                    network=ipaddress.IPv4Network(e2e_network()),
                    hosts=[
                        HostConfig(name=f"{REGION}-h{i}", cpus=8, memory_gib=16)
                        for i in range(1, hosts + 1)
                    ],
                )
            ],
            "flavors": [
                Flavor(
                    name="small",
                    kind=FlavorKind.VM,
                    description=f"1 vCPU, {memory_gib} GiB",
                    hardware=Hardware(cpus=1, memory_gib=memory_gib),
                )
            ],
            "profiles": [
                ContainerProfile(name="web", hardware=Hardware(cpus=1, memory_gib=1), warm_pool=0)
            ],
        }
    )
    path = sandbox.paths.embedded_dir / "fleet.toml"
    path.parent.mkdir(parents=True)
    path.write_text(dump_config(config))
    return config


def sandbox_env(sandbox: Sandbox) -> dict[str, str]:
    """The sandboxed user's environment for code-server (and so the extension and its
    daemon): `leeward` from this checkout first on PATH, no runtime dir of the real user."""
    env = dict(sandbox.env)
    env.pop("XDG_RUNTIME_DIR", None)
    env["XDG_CACHE_HOME"] = str(sandbox.root / "cache")
    env["PATH"] = f"{LEEWARD.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("CI", None)  # code-server and VS Code behave as on a person's machine
    return env


def build_extension(into: Path) -> Path:
    """The extension's .vsix: `npm --prefix extension run package` (after `npm ci` if its
    node_modules is missing), once for all the e2e tests of a run, whichever pytest worker asks
    first (a lock): a .vsix newer than every source file of the extension is used again."""
    with (EXTENSION / ".vsix.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = EXTENSION / VSIX
        if built.exists() and built.stat().st_mtime > _newest_source():
            (into / "npm-package.log").write_text(f"{built} is newer than the sources: reused\n")
            return built
        return _package(into)


def _newest_source() -> float:
    skip = {"node_modules", "out", "dist", ".vscode-test", "e2e", "tests"}
    newest = 0.0
    for path in EXTENSION.rglob("*"):
        parts = path.relative_to(EXTENSION).parts
        if (parts and parts[0] in skip) or path.suffix == ".vsix" or not path.is_file():
            continue
        newest = max(newest, path.stat().st_mtime)
    return newest


def _package(into: Path) -> Path:
    if not (EXTENSION / "node_modules").is_dir() and (EXTENSION / "package-lock.json").exists():
        subprocess.run(
            ["npm", "ci", "--prefix", str(EXTENSION), "--no-audit", "--no-fund"],
            check=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
    started = time.time()
    done = subprocess.run(
        ["npm", "--prefix", str(EXTENSION), "run", "package"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    (into / "npm-package.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"npm run package failed:\n{done.stdout}\n{done.stderr}"
    built = EXTENSION / VSIX
    assert built.exists() and built.stat().st_mtime >= started - 1, (
        f"npm run package made no {built}:\n{done.stdout}"
    )
    return built


def assert_passed(result: dict, artifacts: Path) -> None:
    assert result.get("ok"), (
        f"the workbench scenario failed (artifacts in {artifacts}):\n"
        f"{result.get('error', '(no result.json: see driver.log)')}\n"
        f"status bar seen: {result.get('statusSeen')}\n"
        f"notifications: {result.get('notificationsAtFailure')}\n"
        f"quick input: {result.get('quickInputAtFailure')}"
    )
    assert result["exitCode"] == 0
    assert Path(result["finalScreenshot"]).stat().st_size > 10_000


@contextlib.contextmanager
def fleet_up(
    server: harness.CodeServer, sandbox: Sandbox, artifacts: Path
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`leeward up` in the sandboxed home for the block (its output, checked); afterwards, passed
    or failed, code-server stopped, `leeward down`, and the fleet's, agents' and daemon's logs
    in the artifacts. A `down` that failed fails the test once the block passed."""
    try:
        up = sandbox.run("up", timeout=120)
        (artifacts / "leeward-up.log").write_text(up.stdout + up.stderr)
        assert up.returncode == 0, up.stdout + up.stderr
        yield up
    finally:
        server.stop()
        down = sandbox.run("down", timeout=90)
        (artifacts / "leeward-down.log").write_text(down.stdout + down.stderr)
        harness.collect_logs(
            [sandbox.root / "data", sandbox.root / "state", sandbox.root / "cache"], artifacts
        )
    assert down.returncode == 0, down.stdout + down.stderr
