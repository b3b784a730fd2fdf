"""`leeward proxy NAME` as `config-ssh` writes it: the address raced from the fleet API (with the
signed-in user's credentials), its DNS and the last-known-good cache; a status file per session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from leeward.client.credentials import Credentials, store_credentials
from tests.conftest import until

from .conftest import proxied


async def test_the_proxy_finds_the_environment_through_the_fleet_or_its_cache(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
) -> None:
    async with start_fleet(config_factory(sqlite_url, regions=1)) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "relayed"}
        )
        assert status == 202
        await f.api.wait_state(env["id"], {"running"})
        home = tmp_path / "client"
        paths, xdg = await proxied(f.url, f.api, home, "relayed")
        sessions = home / "xdg-state" / "leeward" / "sessions"

        async def started(command: str, host: str = "relayed") -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                "ssh",
                "-F",
                str(paths.ssh_config),
                "-o",
                "BatchMode=yes",
                host,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **xdg},
            )

        async def ssh(
            command: str, stdin: bytes, host: str = "relayed"
        ) -> tuple[int, bytes, bytes]:
            proc = await started(command, host)
            out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
            assert proc.returncode is not None
            return proc.returncode, out, err

        async def session() -> tuple[asyncio.subprocess.Process, str]:
            """An ssh session that stays open (until its stdin closes): the proxy's status
            file is on this side, out of the environment's sight."""
            proc = await started("echo $LEEWARD_ENVIRONMENT; cat >/dev/null")
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            return proc, line.decode().strip()

        async def end(proc: asyncio.subprocess.Process) -> None:
            assert proc.stdin is not None
            proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), 30) == 0

        def statuses() -> list[dict[str, Any]]:
            found = []
            for path in sessions.glob("*.json"):
                with contextlib.suppress(OSError, ValueError):  # replaced as we read
                    found.append(json.loads(path.read_text()))
            return found

        # While the session runs, its status file says where the address came from.
        proc, name = await session()
        assert name == env["fqdn"]
        recorded = (await until(statuses, "the session's status file", timeout=10))[0]
        assert recorded["state"] == "connected" and recorded["source"] == "api"
        assert recorded["env"] == "relayed"
        await end(proc)
        # ssh hangs up its ProxyCommand when it exits; the status file goes with the proxy.
        await until(lambda: not list(sessions.glob("*.json")), "the status file went", timeout=10)
        # The address race (leeward.client.locate) keeps the last verified address per fleet.
        cache = json.loads((home / "xdg-state" / "leeward" / "addresses.json").read_text())
        known = cache["fleets"][f.url]["environments"]["relayed"]
        assert (known["address"], known["relayPort"]) == (env["address"], env["relayPort"])

        # ssh's %n is whatever the user typed: the fully qualified name works too.
        code, out, err = await ssh("echo $LEEWARD_ENVIRONMENT", b"", host=env["fqdn"])
        assert (code, out.decode().strip()) == (0, env["fqdn"]), err.decode()

        # The fleet's DNS stopped: the session still connects (the API answers), and its
        # status says DNS is down, which the daemon shows as "DNS bypass".
        status, _ = await f.admin.call("POST", "/v1/admin/dns/stop", {"blackHole": True})
        assert status == 200
        # The proxy asks DNS apart once connected: its status file says so within 5 s.
        proc, _ = await session()
        down = await until(
            lambda: [r for r in statuses() if r.get("dns") == "down"], "DNS down", timeout=10
        )
        assert down[0]["state"] == "connected", down
        # DNS back: the same session, still connected, asks again while it says down, and says
        # ok (every REPORT_SECONDS), not "DNS bypass" until its next resume.
        status, _ = await f.admin.call("POST", "/v1/admin/dns/start")
        assert status == 200
        await until(
            lambda: [r for r in statuses() if r.get("dns") == "ok" and r["pid"] == down[0]["pid"]],
            "the session's DNS ok again",
            timeout=15,
        )
        await end(proc)

        # The fleet will not tell (a token it refuses): the cached address still leads to a
        # verified agent. (tests/client/test_locate.py covers a fleet that is down or hangs.)
        store_credentials(
            home / "xdg-config" / "leeward" / "credentials.toml",
            Credentials(fleet=f.url, token="nobody"),
        )
        code, out, err = await ssh("cat", b"through the cache\n")
        assert (code, out) == (0, b"through the cache\n"), err.decode()

        # Signed out, with no address given: one line saying how to sign in, at once.
        (home / "xdg-config" / "leeward" / "credentials.toml").unlink()
        code, out, err = await ssh("true", b"")
        assert code == 255 and out == b""
        assert "Not signed in: run `leeward login`" in err.decode(), err.decode()
