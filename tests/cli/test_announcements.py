"""`leeward admin announce|announcements|announcement edit|withdraw`, `leeward announcements
[dismiss]`, the lines under `leeward list` and `show`, and the CLI's first-line banner, with the
real console script against a real fleet (a real devserver in the announced region)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leeward.cli.announcements import parse_time
from leeward.cli.errors import CliError
from tests.cli.sandbox import make_sandbox
from tests.conftest import small_config, until


def test_times_are_iso_8601_or_relative() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert parse_time("+2s", "--start", now) == now + timedelta(seconds=2)
    assert parse_time("+1h", "--end", now) == now + timedelta(hours=1)
    assert parse_time("+1.5d", "--end", now) == now + timedelta(days=1.5)
    assert parse_time("2026-12-24T18:00Z", "--end", now) == datetime(
        2026, 12, 24, 18, 0, tzinfo=UTC
    )
    assert parse_time("2026-12-24T18:00", "--end", now).tzinfo is UTC
    with pytest.raises(CliError, match="--start 'tomorrow' is not a time"):
        parse_time("tomorrow", "--start", now)


async def test_announcements_from_the_command_line(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "admin").mkdir()
    user = make_sandbox(tmp_path / "alice")
    admin = make_sandbox(tmp_path / "admin")
    async with start_fleet(small_config(tmp_path, sqlite_url)) as f:

        async def leeward(*args: str, who=user, ok: bool = True) -> tuple[int, str, str]:
            done = await asyncio.to_thread(who.run, *args, timeout=120)
            if ok:
                assert done.returncode == 0, (args, done.stdout, done.stderr)
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

        # Refused with a sentence, nothing posted.
        code, _, err = await leeward(
            "admin", "announce", "x", "--region", "mars", who=admin, ok=False
        )
        assert code == 1 and "no region 'mars': the regions are north, south" in err, err
        code, _, err = await leeward("admin", "announce", "x", "--end", "soon", who=admin, ok=False)
        assert code == 1 and "'soon' is not a time" in err, err
        code, _, err = await leeward(
            "admin", "announce", "x", "--start", "+2h", "--end", "+1h", who=admin, ok=False
        )
        assert code == 1 and "must end after it starts" in err, err
        code, _, err = await leeward("admin", "announce", "mine", ok=False)  # alice
        assert code == 1 and "needs an admin token" in err, err
        _, out, _ = await leeward("admin", "announcements", "--json", who=admin)
        assert json.loads(out)["announcements"] == []

        posted_at = time.monotonic()
        text = "Disk swap in north <b>tonight</b>\x1b[2J"
        _, out, _ = await leeward(
            "admin",
            "announce",
            text,
            "--region",
            "north",
            "--severity",
            "warning",
            "--start",
            "+2s",
            "--end",
            "+1h",
            "--link",
            "Status=https://status.test/",
            "--action",
            "move",
            who=admin,
        )
        assert "Posted announcement 1." in out, out
        _, out, err = await leeward("list")
        if time.monotonic() - posted_at < 1.5:  # surely before its start
            assert "announcement 1" not in out and "Disk swap" not in err, (out, err)

        async def listed() -> tuple[str, str] | None:
            _, out, err = await leeward("list")
            return (out, err) if "announcement 1" in out else None

        out, err = await until(listed, "the announcement in `leeward list`", timeout=30)
        assert "warning Disk swap in north <b>tonight</b>[2J (box) · announcement 1" in out, out
        assert err.startswith("warning Disk swap in north"), err  # the first line
        assert "\x1b" not in out + err
        _, out, err = await leeward("show", "box")
        assert "announcement 1" in out and "Disk swap" in err, (out, err)
        _, out, err = await leeward("list", "--json")
        assert err == "" and json.loads(out)["environments"][0]["name"] == "box"
        _, out, err = await leeward("catalog")  # any command that talks to the fleet
        assert err.startswith("warning Disk swap in north"), err
        _, out, err = await leeward("catalog", "--json")
        assert err == "", err
        _, out, _ = await leeward("announcements")
        assert "Disk swap" in out and "box" in out and "leeward move NAME" in out, out
        assert "Status: https://status.test/" in out, out

        # Dismissed: gone from `list` and the first line, until its text changes.
        _, out, _ = await leeward("announcements", "dismiss", "1")
        assert "Dismissed announcement 1" in out, out
        _, out, err = await leeward("list")
        assert "announcement 1" not in out and err == "", (out, err)
        _, out, _ = await leeward("announcements")
        assert "(dismissed)" in out, out
        _, out, _ = await leeward(
            "admin", "announcement", "edit", "1", "--text", "Disk swap moved to Friday", who=admin
        )
        assert "revision 2" in out, out
        _, out, err = await leeward("list")
        assert "Disk swap moved to Friday (box) · announcement 1" in out, out
        assert err.startswith("warning Disk swap moved"), err

        _, out, _ = await leeward("admin", "announcements", "--active", who=admin)
        assert "regions north" in out and "Disk swap moved" in out, out
        _, out, _ = await leeward("admin", "announcement", "withdraw", "1", who=admin)
        assert "Withdrew announcement 1" in out, out
        _, out, err = await leeward("list")
        assert "announcement 1" not in out and err == "", (out, err)
        code, _, err = await leeward("announcements", "dismiss", "1", ok=False)
        assert code == 1 and "No announcement 1 concerns you now" in err, err
