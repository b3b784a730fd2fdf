"""Profile sync across a fleet outage: an edit made while the fleet process is down (killed)
is neither lost nor stuck; it is stored once the fleet is back, and the environment's sync
status says what happened meanwhile."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from leeward.fleet.bootstrap import issue_token
from leeward.fleet.config import dump_config, load_config
from leeward_protocol.fleet import Role
from tests.conftest import Api, free_port, small_config, until
from tests.fleet.test_restart import FleetProcess


async def test_an_edit_made_while_the_fleet_is_down_is_stored_when_it_is_back(tmp_path, http):
    config = small_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}", regions=1)
    config.listen_port = free_port()
    config_path = tmp_path / "fleet.toml"
    config_path.write_text(dump_config(config))
    url = f"http://127.0.0.1:{config.listen_port}"
    fleet = FleetProcess(config_path, tmp_path / "fleet.log")
    try:
        await fleet.start(url, http)
        api = Api(url, http, await issue_token(load_config(config_path), "alice", Role.USER))
        status, env = await api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status == 202, env
        env = await api.wait_state(env["id"], {"running"})
        assert config.provider.data_dir is not None
        bashrc = config.provider.data_dir / env["id"] / "home" / ".bashrc"

        async def stored() -> str | None:
            status, profile = await api.call("GET", "/v1/profile")
            if status != 200:
                return None
            return next((f["sha256"] for f in profile["files"] if f["path"] == ".bashrc"), None)

        async def sync_of_box() -> Any:
            status, body = await api.call("GET", "/v1/environments/box")
            return body["sync"] if status == 200 else None

        bashrc.write_text("export BEFORE=1\n")
        first = hashlib.sha256(b"export BEFORE=1\n").hexdigest()
        await until(lambda: _is(stored, first), "the first edit in the profile", timeout=10)

        assert fleet.stop(signal.SIGKILL) == -signal.SIGKILL
        during = b"export DURING_THE_OUTAGE=1\n"
        bashrc.write_bytes(during)
        await fleet.start(url, http)
        await until(
            lambda: _is(stored, hashlib.sha256(during).hexdigest()),
            "the edit made during the outage in the profile",
            timeout=60,
        )
        status, history = await api.call("GET", "/v1/profile/history?path=.bashrc")
        assert [v["source"] for v in history["versions"]] == ["box", "box"]
        # The agent said it could not reach the fleet, then that it could again.
        sync = await until(
            lambda: _clean(sync_of_box), "a sync status without an error", timeout=30
        )
        assert sync["version"] == 2
        assert "cannot" not in (sync["error"] or "")
        log = (config.provider.data_dir / env["id"] / "agent.log").read_text()
        assert "cannot upload changes" in log or "cannot follow the profile" in log
        await api.call("DELETE", f"/v1/environments/{env['id']}")
        await api.wait_state(env["id"], {"deleted"})
    finally:
        if fleet.proc is not None and fleet.proc.poll() is None:
            fleet.stop(signal.SIGTERM)
        from leeward.providers.local import LocalProvider

        await LocalProvider(config.provider.data_dir, stop_agents_on_exit=True).close()


async def _is(probe: Callable[[], Awaitable[Any]], expected: Any) -> bool:
    return bool(await probe() == expected)


async def _clean(probe: Callable[[], Awaitable[Any]]) -> Any:
    sync = await probe()
    return sync if sync is not None and sync["error"] == "" and sync["version"] == 2 else None
