"""Backups and restores through real host agents (`provider.kind = "hosts"`): the host runs
restic where the home is and streams its progress back; a host agent killed with `kill -9` in
the middle of a backup and of a restore leaves the repository sound (`restic check`), the run
failed with the reason (the backup) or the new devserver waiting for its host (the restore),
and nothing partial presented as complete: once the host is back, the next backup succeeds and
the restore is done again from the start."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from leeward.providers import restic
from tests.conftest import run_ssh, small_config, ssh_access, until
from tests.fleet.test_backups import repository_of
from tests.host.kit import HostAgent, hosts, join

pytestmark = pytest.mark.slow

BIG = 400_000_000


async def restic_doing(what: str) -> int | None:
    found = await asyncio.create_subprocess_exec(
        "pgrep", "-f", f"restic .* {what}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await found.communicate()
    pids = [int(p) for p in out.split()]
    return pids[-1] if pids else None


async def test_backup_and_restore_survive_a_host_agent_killed_in_the_middle(
    start_fleet, tmp_path, sqlite_url
):
    config = small_config(tmp_path, sqlite_url, regions=2, hosts=1)
    config.provider.kind = "hosts"
    config.backup.check_seconds = 3600
    config.lease_seconds = 3
    assert config.provider.data_dir is not None
    agents = {name: HostAgent(tmp_path / "hosts" / name, name) for name in ("north-h1", "south-h1")}
    async with start_fleet(config) as f:
        try:
            await join(f.admin, f.url, agents, config.provider.data_dir)
            status, env = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": "box", "region": "north"},
            )
            assert status == 202, env
            await f.api.wait_state(env["id"], {"running"}, 120)
            ssh = await ssh_access(f.api, tmp_path / "home", "alice")
            code, _, err = await run_ssh(
                ssh, "box", f"echo hello > note && head -c {BIG} /dev/urandom > big", timeout=120
            )
            assert code == 0, err

            async def ended(backup_id: int) -> dict[str, Any]:
                async def probe() -> dict[str, Any] | None:
                    _, listing = await f.api.call("GET", "/v1/environments/box/backups")
                    row = next(b for b in listing["backups"] if b["id"] == backup_id)
                    return row if row["state"] != "running" else None

                result: dict[str, Any] = await until(probe, f"backup {backup_id}", timeout=300)
                return result

            # kill -9 of the host agent during a backup: restic dies with it.
            status, started = await f.api.call("POST", "/v1/environments/box/backups")
            assert status == 202, started
            await until(lambda: restic_doing("backup"), "restic backing up on the host")
            north = agents["north-h1"]
            assert north.proc is not None
            north.proc.send_signal(signal.SIGKILL)
            north.proc.wait()
            cut = await ended(started["id"])
            assert cut["state"] == "failed" and "host" in cut["message"].lower(), cut
            assert await until(lambda: restic_doing("backup"), "restic gone", expected=None) is None
            repo = await repository_of(f, env["id"])
            await restic.check(restic.Repository(repo.location, repo.password))

            before = (await hosts(f.admin))["north-h1"]["lastSeen"]
            north.start()

            async def back() -> bool:  # heard from again, at its new address
                host = (await hosts(f.admin))["north-h1"]
                return bool(host["reachable"]) and host["lastSeen"] != before

            await until(back, "north-h1 back", timeout=30)
            status, started = await f.api.call("POST", "/v1/environments/box/backups")
            assert status == 202, started
            done = await ended(started["id"])
            assert done["state"] == "succeeded", done
            assert done["totalBytes"] >= BIG

            # kill -9 of the new devserver's host agent during its restore.
            status, restored = await f.api.call(
                "POST", "/v1/environments/box/restore", {"to": {"name": "copy", "region": "south"}}
            )
            assert status == 200, restored
            await until(lambda: restic_doing("restore"), "restic restoring on the host")
            south = agents["south-h1"]
            assert south.proc is not None
            south.proc.send_signal(signal.SIGKILL)
            south.proc.wait()
            home = config.provider.data_dir / restored["environmentId"] / "home"
            await until(lambda: restic_doing("restore"), "restic gone", expected=None)
            assert not home.exists(), "a partial restore was put in place"
            _, copy = await f.api.call("GET", f"/v1/environments/{restored['environmentId']}")
            assert copy["state"] == "provisioning", copy
            south.start()
            copy = await f.api.wait_state(restored["environmentId"], {"running", "failed"}, 300)
            assert copy["state"] == "running", copy
            ssh = await ssh_access(f.api, tmp_path / "home", "alice")
            code, out, err = await run_ssh(ssh, "copy", "cat note && stat -c %s big")
            assert (code, out.split()) == (0, ["hello", str(BIG)]), err
        finally:
            for agent in agents.values():
                agent.stop()
