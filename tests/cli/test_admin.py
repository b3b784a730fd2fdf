"""`leeward admin dns stop|start|status` against a real fleet, as an admin and as a user who is
not one; `leeward locate` finds the environment through a black-holed DNS all the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.cli.sandbox import make_sandbox
from tests.conftest import small_config
from tests.fleet.test_dns import ask_async


async def test_admin_dns_and_locate_from_the_command_line(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "alice").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    async with start_fleet(small_config(tmp_path, sqlite_url)) as f:

        async def leeward(*args: str) -> str:
            result = await asyncio.to_thread(sandbox.run, *args, timeout=60, check=True)
            return result.stdout

        await leeward("login", "--fleet", f.url, "--token", f.admin.token)
        status, env = await f.admin.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status in (201, 202), env
        env = await f.admin.wait_state(env["id"], {"running"})
        await leeward("config-ssh", "--no-include")

        found = json.loads(await leeward("locate", "box", "--json"))
        assert (found["source"], found["address"]) == ("api", env["address"])
        assert found["fqdn"] == env["fqdn"]

        stopped = json.loads(await leeward("admin", "dns", "stop", "--black-hole", "--json"))
        assert stopped["mode"] == "black-hole"
        status, body = await f.admin.call("GET", "/v1/admin/dns")
        assert body["mode"] == "black-hole"
        text = await leeward("locate", "box")  # still found: the API and the cache
        assert f"{env['fqdn']} at {env['address']}" in text and "verified" in text

        assert "closed" in await leeward("admin", "dns", "stop")
        with_dns = await leeward("admin", "dns", "start")
        assert f"DNS for leeward.test at {stopped['address']}: serving." in with_dns
        name = f"box.{env['region']}.leeward.test"
        rcode, addresses, _ = await ask_async(stopped["address"], name)
        assert (rcode, addresses) == ("NOERROR", [env["address"]])

        # A user who is not an admin is told so.
        user = make_sandbox(tmp_path / "alice")
        login = await asyncio.to_thread(
            user.run, "login", "--fleet", f.url, "--token", f.api.token, timeout=60
        )
        assert login.returncode == 0, login.stderr
        refused = await asyncio.to_thread(user.run, "admin", "dns", "stop", timeout=60)
        assert refused.returncode != 0 and "admin" in refused.stderr
