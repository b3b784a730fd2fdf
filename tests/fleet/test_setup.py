"""Features and one-offs installed at provision, end to end: a real fleet, the local provider and
real agents. The user's config.toml reaches the fleet through `PUT /v1/profile/config`; the
environment's `setup` items are read back through the user's API (and `leeward show`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from leeward.agent import control
from leeward.agent.config import AgentConfig
from leeward.fleet.config import FeatureConfig, FleetConfig
from leeward.fleet.recovery import recover
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import Environment
from leeward_protocol.profile import FeatureList
from tests.cli.sandbox import make_sandbox
from tests.conftest import Api, small_config, until

FAILING = FeatureConfig(
    name="failing",
    description="Always fails.",
    install="echo 'downloading the failing thing'\necho 'no such thing' >&2\nexit 3\n",
)
COUNTER = FeatureConfig(
    name="counter",
    description="Counts its runs.",
    files={".config/counter/settings": "colour = blue\n"},
    install="echo run >> ~/counter-runs\ncat .config/counter/settings\n",
)
SLOW = FeatureConfig(
    name="slow",
    description="Waits for the test.",
    install="while [ ! -e ~/release-slow ]; do sleep 0.05; done\necho released\n",
    timeout_seconds=120,
)
CONTAINER_ONLY = FeatureConfig(
    name="container-only", kinds=["container"], install="touch ~/container-only-ran\n"
)
TERMINAL = {"installed", "failed"}


def fleet_config(tmp_path: Path, sqlite_url: str, **overrides: Any) -> FleetConfig:
    return small_config(
        tmp_path, sqlite_url, features=[FAILING, COUNTER, SLOW, CONTAINER_ONLY], **overrides
    )


def home_of(config: FleetConfig, env_id: str) -> Path:
    assert config.provider.data_dir is not None
    return config.provider.data_dir / env_id / "home"


async def set_user_config(api: Api, config: dict[str, Any]) -> None:
    status, body = await api.call("PUT", "/v1/profile/config", config)
    assert status == 200, body


async def create(api: Api, name: str, kind: str = "devserver") -> dict[str, Any]:
    request = {"kind": kind, "name": name}
    request |= {"flavor": "tiny"} if kind == "devserver" else {"profile": "web"}
    status, body = await api.call("POST", "/v1/environments", request)
    assert status in (201, 202), body
    return dict(await api.wait_state(body["id"], {"running"}))


def setup_done(count: int) -> Callable[[Environment], bool]:
    return lambda env: len(env.setup) == count and all(i.state in TERMINAL for i in env.setup)


async def environment_when(
    api: Api, env_id: str, test: Callable[[Environment], bool], what: str
) -> Environment:
    last: list[Environment] = []

    async def probe() -> Environment | None:
        status, body = await api.call("GET", f"/v1/environments/{env_id}")
        assert status == 200, body
        env = Environment.model_validate(body)
        last[:] = [env]
        return env if test(env) else None

    try:
        result: Environment = await until(probe, what)
    except AssertionError:
        shown = [i.model_dump() for i in last[0].setup] if last else None
        raise AssertionError(f"{what}; last setup: {shown}") from None
    return result


def by_name(env: Environment) -> dict[str, Any]:
    return {item.name: item for item in env.setup}


async def test_a_failing_feature_is_reported_and_the_rest_is_installed(
    start_fleet, tmp_path, sqlite_url
):
    config = fleet_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        await set_user_config(
            f.api,
            {
                "features": ["failing", "counter", "container-only"],
                "one_offs": [{"run": "echo hi > ~/one-off-out"}],
            },
        )
        created = await create(f.api, "box")
        env = await environment_when(f.api, created["id"], setup_done(3), "the three steps finish")
        assert env.state == "running", "a failed feature never holds the environment back"
        items = by_name(env)
        assert [i.name for i in env.setup] == ["failing", "counter", "one-off 1"], (
            "in order; a feature for containers only is not installed in a devserver"
        )
        failing = items["failing"]
        assert failing.state == "failed"
        assert failing.detail.startswith("install script exited with status 3 after ")
        assert failing.log == "downloading the failing thing\nno such thing\n"
        assert failing.log_path is not None and failing.log_path.endswith("feature-failing.log")
        assert failing.started_at is not None and failing.finished_at is not None
        assert env.ready_at is not None and failing.started_at >= env.ready_at
        assert items["counter"].state == "installed"
        assert items["counter"].log == "colour = blue\n"
        assert items["one-off 1"].state == "installed"
        home = home_of(config, env.id)
        assert (home / "one-off-out").read_text() == "hi\n"
        assert (home / ".config/counter/settings").read_text() == "colour = blue\n"
        assert not (home / "container-only-ran").exists()

        # The user sees it in `leeward show` (and the features in `leeward features list`).
        (tmp_path / "cli").mkdir()
        sandbox = make_sandbox(tmp_path / "cli")
        assert f.api.token is not None

        def leeward(*args: str) -> str:
            return sandbox.run(*args, check=True).stdout

        # In a thread: the fleet answers from this test's event loop.
        await asyncio.to_thread(leeward, "login", "--fleet", f.url, "--token", f.api.token)
        shown = await asyncio.to_thread(leeward, "show", "box")
        assert "failed     failing install script exited with status 3" in shown
        assert "│ downloading the failing thing" in shown
        assert "│ no such thing" in shown
        assert "installed  counter" in shown
        assert "installed  one-off 1" in shown
        assert "feature-failing.log" in shown
        as_json = json.loads(await asyncio.to_thread(leeward, "show", "box", "--json"))
        assert [i["state"] for i in as_json["setup"]] == ["failed", "installed", "installed"]
        listed = await asyncio.to_thread(leeward, "features", "list")
        lines = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
        assert "devserver, container" in lines["failing"] and "Always fails." in lines["failing"]
        assert lines["container-only"].split()[1] == "container"
        assert "slow" in lines and "counter" in lines


async def test_installed_steps_are_not_run_again_on_reload_or_agent_restart(
    start_fleet, tmp_path, sqlite_url
):
    config = fleet_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        await set_user_config(f.api, {"features": ["counter", "failing"]})
        created = await create(f.api, "box")
        env = await environment_when(f.api, created["id"], setup_done(2), "first setup")
        home = home_of(config, env.id)
        assert (home / "counter-runs").read_text() == "run\n"
        first_failure = by_name(env)["failing"].started_at
        assert first_failure is not None
        agent_dir = home.parent
        agent = AgentConfig.load(agent_dir / "agent.json")

        # A reload goes over the steps again: the failed one is tried again, the other is not.
        answer = await control.request(agent.control_socket, {"op": "reload"})
        assert answer == {"ok": True}

        def tried_again(after: Any) -> Callable[[Environment], bool]:
            def test(env: Environment) -> bool:
                failing = by_name(env).get("failing")
                started = failing.started_at if failing is not None else None
                return setup_done(2)(env) and started is not None and started > after

            return test

        env = await environment_when(f.api, env.id, tried_again(first_failure), "after reload")
        assert by_name(env)["counter"].detail == "already installed; not run again"
        assert by_name(env)["counter"].log == "colour = blue\n", "the last run's log"
        assert (home / "counter-runs").read_text() == "run\n"

        # The agent stops and the fleet starts it again: nothing installed twice either.
        pid = int((agent_dir / "agent.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        await until(lambda: gone(pid), "the agent stops")
        second_failure = by_name(env)["failing"].started_at
        await recover(f.fleet, at_start=True)
        env = await environment_when(f.api, env.id, tried_again(second_failure), "after restart")
        assert int((agent_dir / "agent.pid").read_text()) != pid
        assert env.state == "running"
        assert by_name(env)["counter"].state == "installed"
        assert (home / "counter-runs").read_text() == "run\n"


async def test_a_slow_step_does_not_delay_ready(start_fleet, tmp_path, sqlite_url):
    config = fleet_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        await set_user_config(
            f.api, {"features": ["slow"], "one_offs": [{"run": "echo after > ~/after-slow"}]}
        )
        created = await create(f.api, "box")
        assert created["state"] == "running"
        env = await environment_when(
            f.api,
            created["id"],
            lambda e: [i.state for i in e.setup] == ["installing", "pending"],
            "the slow step installing, the next one pending",
        )
        assert env.state == "running"
        home = home_of(config, env.id)
        assert not (home / "after-slow").exists()
        (home / "release-slow").touch()
        env = await environment_when(f.api, env.id, setup_done(2), "both steps finish")
        assert [i.state for i in env.setup] == ["installed", "installed"]
        assert env.setup[0].log == "released\n"
        assert (home / "after-slow").read_text() == "after\n"


async def test_a_warm_container_installs_only_once_claimed(start_fleet, tmp_path, sqlite_url):
    config = fleet_config(tmp_path, sqlite_url, regions=1, warm_pool=1, pool_interval_seconds=0.2)
    async with start_fleet(config) as f:
        await set_user_config(f.api, {"features": ["container-only"]})

        async def warm_home() -> Path | None:
            async with f.fleet.store.read() as session:
                ids = (
                    (
                        await session.execute(
                            select(EnvironmentRow.id).where(EnvironmentRow.state == "warm")
                        )
                    )
                    .scalars()
                    .all()
                )
            return home_of(config, ids[0]) if ids else None

        home = await until(warm_home, "a warm container")
        assert not (home / ".local/state/leeward/setup").exists(), "warm: nothing runs"
        claimed = await create(f.api, "web-box", kind="container")
        assert home_of(config, claimed["id"]) == home, "the warm container was claimed"
        env = await environment_when(f.api, claimed["id"], setup_done(1), "setup after the claim")
        assert env.setup[0].state == "installed"
        assert (home / "container-only-ran").exists()


async def test_features_lists_the_catalog(start_fleet, tmp_path, sqlite_url):
    async with start_fleet(fleet_config(tmp_path, sqlite_url)) as f:
        status, body = await f.api.call("GET", "/v1/features")
        assert status == 200, body
        features = FeatureList.model_validate(body).features
        assert [x.name for x in features] == ["failing", "counter", "slow", "container-only"]
        counter = features[1]
        assert counter.description == "Counts its runs."
        assert counter.kinds == ["devserver", "container"]
        assert counter.files == [".config/counter/settings"]
        assert "install" not in json.dumps(body), "the scripts stay in the fleet"
        status, _ = await f.api.as_(None).call("GET", "/v1/features")
        assert status == 401


async def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"
