"""`leeward backup now|list|show|restore|schedule`, `leeward move` and `leeward admin host
show|decommission` against a real fleet (real agents, restic), as a user and as an admin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.cli.sandbox import make_sandbox
from tests.conftest import small_config

pytestmark = pytest.mark.slow


async def test_backups_and_moves_from_the_command_line(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "admin").mkdir()
    user = make_sandbox(tmp_path / "alice")
    admin = make_sandbox(tmp_path / "admin")
    config = small_config(tmp_path, sqlite_url)
    config.backup.check_seconds = 3600
    async with start_fleet(config) as f:

        async def leeward(*args: str, who=user, ok: bool = True) -> tuple[int, str, str]:
            done = await asyncio.to_thread(who.run, *args, timeout=300)
            if ok:
                assert done.returncode == 0, (args, done.stderr)
            return done.returncode, done.stdout, done.stderr

        await leeward("login", "--fleet", f.url, "--token", f.api.token)
        await leeward("login", "--fleet", f.url, "--token", f.admin.token, who=admin)
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "box", "region": "north"},
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})

        _, out, _ = await leeward("backup", "now", "box")
        assert "Backup 1 of box: snapshot" in out, out
        _, out, _ = await leeward("backup", "list", "box")
        assert "box" in out and "request" in out and "succeeded" in out, out
        listing = json.loads((await leeward("backup", "list", "box", "--json"))[1])
        assert listing["backups"][0]["id"] == 1
        _, out, _ = await leeward("show", "box")
        assert "backups" in out and "every 60 min" in out, out
        _, out, _ = await leeward("backup", "show", "box", "1")
        assert "Backup 1 of box" in out, out
        snapshot = listing["backups"][0]["snapshot"]
        by_snapshot = json.loads((await leeward("backup", "show", "box", snapshot, "--json"))[1])
        assert by_snapshot["backup"]["id"] == 1
        code, _, err = await leeward("backup", "show", "box", "deadbeef", ok=False)
        assert code != 0 and "no backup with snapshot deadbeef" in err, err
        code, _, err = await leeward("backup", "show", "box", "one", ok=False)
        assert code != 0 and "not a backup" in err, err

        _, out, _ = await leeward("backup", "schedule", "box", "--every", "30m")
        assert "every 30 minutes" in out, out
        code, _, err = await leeward("backup", "schedule", "box", "--every", "3x", ok=False)
        assert code != 0 and "15m, 2h or 1d" in err, err
        code, _, err = await leeward("backup", "restore", "box", ok=False)
        assert code != 0 and "--to NEW_NAME" in err, err
        code, _, err = await leeward("backup", "show", "box", "99", ok=False)
        assert code != 0 and "no backup 99" in err, err
        code, _, err = await leeward("backup", "restore", "box", "1", "--path", "../x", ok=False)
        assert code != 0 and "home" in err, err

        _, out, _ = await leeward("move", "box", "--region", "south")
        assert "box moved to south" in out, out
        _, out, _ = await leeward("show", "box")
        assert "south" in out, out

        moved = json.loads((await leeward("show", "box", "--json"))[1])
        _, out, _ = await leeward("admin", "host", "show", moved["host"], who=admin)
        assert f"{moved['host']} (south): active" in out and "devserver box (alice)" in out, out
        _, out, _ = await leeward(
            "admin", "host", "decommission", "north-h2", "--by", "2h", "--reason", "t", who=admin
        )
        assert "decommissioning" in out, out
        code, _, err = await leeward(
            "admin", "host", "decommission", "north-h1", "--by", "soon", who=admin, ok=False
        )
        assert code != 0 and "--by" in err, err
        code, _, err = await leeward("admin", "host", "show", "north-h1", ok=False)
        assert code != 0 and "admin" in err, err
