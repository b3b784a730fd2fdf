"""`leeward proxy NAME` as `config-ssh` would use it: the address from the fleet API (with the
signed-in user's credentials), then from the last-known-good cache; a status file per session."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from leeward.credentials import Credentials, store_credentials
from tests.conftest import ssh_access

from .conftest import LEEWARD


async def test_the_proxy_finds_the_environment_through_the_fleet_then_its_cache(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
) -> None:
    async with start_fleet(config_factory(sqlite_url, regions=1)) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "relayed"}
        )
        assert status == 202
        await f.api.wait_state(env["id"], {"running"})
        home = tmp_path / "client"
        paths = await ssh_access(f.api, home, "alice")
        xdg = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
            "XDG_STATE_HOME": str(home / "xdg-state"),
        }
        store_credentials(
            home / "xdg-config" / "leeward" / "credentials.toml",
            Credentials(fleet=f.url, token=f.api.token or ""),
        )
        proxy = f"{LEEWARD} proxy %n --known-hosts {paths.known_hosts}"
        config = paths.ssh_config.read_text().replace(
            "Host relayed ", f"Host relayed \n    ProxyCommand {proxy}\nHost relayed "
        )
        paths.ssh_config.write_text(config)
        sessions = home / "xdg-state" / "leeward" / "sessions"

        async def ssh(
            command: str, stdin: bytes, host: str = "relayed"
        ) -> tuple[int, bytes, bytes]:
            proc = await asyncio.create_subprocess_exec(
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
            out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
            assert proc.returncode is not None
            return proc.returncode, out, err

        # While the session runs, its status file says where the address came from.
        code, out, err = await ssh(f"cat {sessions}/*.json; echo; echo $LEEWARD_ENVIRONMENT", b"")
        assert code == 0, err.decode()
        status_line, name = out.decode().splitlines()[:2]
        recorded = json.loads(status_line)
        assert recorded["state"] == "connected" and recorded["source"] == "api"
        assert recorded["env"] == "relayed"
        assert name == env["fqdn"]
        # ssh hangs up its ProxyCommand when it exits; the status file goes with the proxy.
        async with asyncio.timeout(10):
            while list(sessions.glob("*.json")):
                await asyncio.sleep(0.02)
        cache = json.loads((home / "xdg-state" / "leeward" / "relay-addresses.json").read_text())
        assert cache["relayed"]["address"] == env["address"]

        # ssh's %n is whatever the user typed: the fully qualified name works too.
        code, out, err = await ssh("echo $LEEWARD_ENVIRONMENT", b"", host=env["fqdn"])
        assert (code, out.decode().strip()) == (0, env["fqdn"]), err.decode()

        # The fleet cannot be reached: the cached address still leads to a verified agent.
        store_credentials(
            home / "xdg-config" / "leeward" / "credentials.toml",
            Credentials(fleet="http://127.0.0.1:9", token="nobody"),
        )
        code, out, err = await ssh("cat", b"through the cache\n")
        assert (code, out) == (0, b"through the cache\n"), err.decode()
