"""`leeward status`: the proxies' sessions, from their status files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from leeward.client.paths import Paths
from leeward_protocol.fleet import Environment

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def paths_in(root: Path) -> Paths:
    return Paths(
        config_dir=root / "config",
        data_dir=root / "data",
        state_dir=root / "state",
        ssh_dir=root / "home dir" / ".ssh" / "leeward",
    )


def environment(name: str, state: str = "running", **extra: object) -> Environment:
    wire: dict[str, object] = {
        "id": f"e-{name}",
        "name": name,
        "fqdn": f"{name}.us-east.leeward.test",
        "kind": "devserver",
        "flavor": "small",
        "hardware": {"cpus": 2, "memoryGib": 8},
        "region": "us-east",
        "address": "127.101.0.7",
        "sshPort": 2222,
        "state": state,
        "lifespan": "temporary",
        "createdAt": NOW.isoformat(),
        "updatedAt": NOW.isoformat(),
    }
    wire.update(extra)
    return Environment.model_validate(wire)


# -- lifespan --------------------------------------------------------------------------------


def test_status_lists_the_proxies_sessions(tmp_path: Path) -> None:
    import json

    from tests.cli.sandbox import make_sandbox

    sandbox = make_sandbox(tmp_path)
    assert "No SSH session" in sandbox.run("status", check=True).stdout
    sessions = sandbox.paths.state_dir / "sessions"
    sessions.mkdir(parents=True)
    record = {
        "env": "box",
        "pid": os.getpid(),
        "state": "resuming",
        "source": "cache",
        "rtt": 0.0031,
        "reason": "path silent",
        "dns": "down",
    }
    (sessions / f"{os.getpid()}.json").write_text(json.dumps(record))
    out = sandbox.run("status", check=True).stdout
    assert "box" in out and "resuming" in out and "3.1 ms" in out
    assert "via cache (DNS bypass)" in out and "path silent" in out
    listed = json.loads(sandbox.run("status", "--json", check=True).stdout)
    assert listed[0]["env"] == "box" and listed[0]["dns_down"] is True
