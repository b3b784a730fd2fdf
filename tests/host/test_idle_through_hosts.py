"""Idle stop through a real host agent (`provider.kind = "hosts"`): the fleet asks the host to
suspend the environment (`POST /v1/environments/ID/suspend` of the host API: its agent and
sandbox stop, its home stays on the host's disk), and `leeward start` (the API) has the host
start it again over the same home."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leeward.common.clock import ManualClock
from leeward.fleet.config_notify import IdlePolicy
from tests.conftest import run_ssh, small_config, ssh_access
from tests.fleet.test_idle import create, stopped_by_the_loop
from tests.host.kit import HostAgent, join

pytestmark = pytest.mark.slow


async def test_an_idle_container_is_suspended_by_its_host_and_started_again_with_its_home(
    start_fleet, tmp_path, sqlite_url
):
    clock = ManualClock(datetime.now(UTC))
    config = small_config(tmp_path, sqlite_url, regions=1, hosts=1)
    config.provider.kind = "hosts"
    config.idle.containers = IdlePolicy(stop_after_minutes=0.25)
    assert config.provider.data_dir is not None
    agents = {"north-h1": HostAgent(tmp_path / "hosts" / "north-h1", "north-h1")}
    async with start_fleet(config, clock=clock, background=False) as f:
        try:
            await join(f.admin, f.url, agents, config.provider.data_dir)
            # Commands signed before the host agent started are refused: the fleet's clock,
            # moved by hand, is brought to the real time the host agent keeps.
            clock.advance(datetime.now(UTC) - clock.now())
            env = await create(f.api, {"kind": "container", "profile": "web", "name": "box"})
            ssh = await ssh_access(f.api, tmp_path / "home", "alice")
            code, _, err = await run_ssh(ssh, "box", "echo kept > note", timeout=120)
            assert code == 0, err

            await stopped_by_the_loop(f, clock, "box")
            assert await f.fleet.provider.running([env["id"]]) == set()
            home = config.provider.data_dir / env["id"] / "home"
            assert home.is_dir()  # kept on the host's disk

            status, body = await f.api.call("POST", "/v1/environments/box/start")
            assert status == 202 and body["state"] == "provisioning", body
            await f.api.wait_state(env["id"], {"running"}, 120)
            code, out, err = await run_ssh(ssh, "box", "cat note", timeout=120)
            assert (code, out) == (0, "kept\n"), err
        finally:
            for agent in agents.values():
                agent.stop()
