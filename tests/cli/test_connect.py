"""Connecting from this machine: `leeward status` shows the proxies' sessions, from their status
files. (`config-ssh` and `ssh` run in test_end_to_end.py, `locate` in test_admin.py, against real
fleets.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .sandbox import make_sandbox


def test_status_lists_the_proxies_sessions(tmp_path: Path) -> None:
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
