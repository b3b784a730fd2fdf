"""The fleet process stopped (SIGTERM) or killed (kill -9) and started again: every environment
is still listed and reachable over real SSH, and no capacity is leaked or double-counted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from leeward.fleet.bootstrap import issue_token
from leeward.fleet.config import dump_config, load_config
from leeward.fleet.placement import host_usage
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import LIVE_STATES, Role
from tests.conftest import Api, free_port, run_ssh, small_config, ssh_access, until


class FleetProcess:
    """`leeward fleet serve` as its own process, as an operator runs it."""

    def __init__(self, config_path: Path, log: Path) -> None:
        self.config_path = config_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, url: str, http) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "leeward.cli",
                    "fleet",
                    "serve",
                    "--config",
                    str(self.config_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = self.proc

        async def healthy() -> bool:
            assert proc.poll() is None, f"fleet exited: {self.log.read_text()[-2000:]}"
            try:
                async with http.get(url + "/healthz") as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            await until(healthy, "the fleet answered", timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.log.read_text()[-2000:]}") from None

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


async def snapshot(store: Store) -> tuple[dict[str, tuple[int, int, int]], int]:
    """Per-host usage, and the number of live environments."""
    async with store.read() as session:
        usage = await host_usage(session)
        live = await session.scalar(
            select(func.count()).where(EnvironmentRow.state.in_([s.value for s in LIVE_STATES]))
        )
    return {h.name: (h.used.cpus, h.used.memory_gib, h.used.gpus) for h in usage}, int(live or 0)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_fleet_restarts_keep_every_environment(tmp_path, http, database):
    if database == "postgresql":
        from tests.conftest import fresh_postgres_database

        database_cm = fresh_postgres_database()
        db_url = await database_cm.__aenter__()
    else:
        database_cm = None
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    config = small_config(tmp_path, db_url, regions=1, hosts=2, warm_pool=1)
    config.listen_port = free_port()
    config.pool_interval_seconds = 0.2
    config_path = tmp_path / "fleet.toml"
    config_path.write_text(dump_config(config))
    url = f"http://127.0.0.1:{config.listen_port}"
    fleet = FleetProcess(config_path, tmp_path / "fleet.log")
    store = Store(db_url)
    try:
        await fleet.start(url, http)
        api = Api(url, http, await issue_token(load_config(config_path), "alice", Role.USER))
        made = []
        for body in (
            {"kind": "devserver", "flavor": "tiny", "name": "pet"},
            {"kind": "devserver", "flavor": "small", "lifespan": "permanent"},
            {"kind": "container", "profile": "web"},
        ):
            status, env = await api.call("POST", "/v1/environments", body)
            assert status in (201, 202), env
            made.append((await api.wait_state(env["id"], {"running"}))["id"])
        # The SSH user is the owner's fleet name; the agent runs commands as its own OS user.
        ssh = await ssh_access(api, tmp_path / "home", "alice")
        code, out, err = await run_ssh(ssh, "pet", "echo kept > marker && echo $HOME")
        assert code == 0, err
        # Three environments of alice's and the refilled warm container.
        await until(lambda: live_count(store), expected=4)
        before = await snapshot(store)

        for how in (signal.SIGTERM, signal.SIGKILL):
            code = fleet.stop(how)
            assert code == (0 if how is signal.SIGTERM else -signal.SIGKILL)
            # The control plane is down; the environments are not.
            code, out, err = await run_ssh(ssh, "pet", "cat marker")
            assert (code, out.strip()) == (0, "kept"), err
            await fleet.start(url, http)
            _, listed = await api.call("GET", "/v1/environments")
            assert sorted(e["id"] for e in listed["environments"]) == sorted(made)
            assert {e["state"] for e in listed["environments"]} == {"running"}
            for env in listed["environments"]:
                code, out, err = await run_ssh(ssh, env["name"], "echo alive")
                assert (code, out.strip()) == (0, "alive"), (how, env["name"], err)
            await until(lambda: snapshot(store), expected=before)

        # An agent that died while the fleet was down is restarted, with its disk.
        fleet.stop(signal.SIGKILL)
        pid = int((config.provider.data_dir / made[0] / "agent.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        await fleet.start(url, http)
        await until(lambda: ssh_ok(ssh, "pet"), expected=True)
        code, out, err = await run_ssh(ssh, "pet", "cat marker")
        assert (code, out.strip()) == (0, "kept"), err
        assert await snapshot(store) == before

        for env_id in made:
            await api.call("DELETE", f"/v1/environments/{env_id}")
        for env_id in made:
            await api.wait_state(env_id, {"deleted"})
    finally:
        if fleet.proc is not None and fleet.proc.poll() is None:
            fleet.stop(signal.SIGTERM)
        from leeward.providers.local import LocalProvider

        leftovers = LocalProvider(config.provider.data_dir, stop_agents_on_exit=True)
        await leftovers.close()
        await store.close()
        if database_cm is not None:
            await database_cm.__aexit__(None, None, None)


async def live_count(store: Store) -> int:
    return (await snapshot(store))[1]


async def ssh_ok(paths, alias: str) -> bool:
    code, _, _ = await run_ssh(paths, alias, "true", timeout=15)
    return code == 0


def test_fleet_serve_says_its_port_is_taken(tmp_path: Path) -> None:
    """EADDRINUSE is the operator's to fix, in a sentence: not "Unexpected OSError ... report
    it"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/fleet.db")
        config.listen_host, config.listen_port = "127.0.0.1", port
        config.dns.enabled = False
        config_path = tmp_path / "fleet.toml"
        config_path.write_text(dump_config(config))
        done = subprocess.run(
            [sys.executable, "-m", "leeward.cli", "fleet", "serve", "--config", str(config_path)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"Port {port} on 127.0.0.1 is taken" in done.stderr, done.stderr
    assert "report it" not in done.stderr
