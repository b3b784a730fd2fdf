"""A fleet without sandboxes (`provider.sandboxes = "off"`, or a machine that cannot make them)
serves one user only, and says why to the second one who asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from leeward.fleet.config import ConfigError
from leeward.sandbox.cgroups import Cgroups
from tests.conftest import run_ssh, small_config, ssh_access


async def test_a_second_user_is_refused_with_the_reason(start_fleet, sqlite_url, tmp_path: Path):
    config = small_config(tmp_path, sqlite_url, regions=1)
    config.provider.sandboxes = "off"
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "solo"}
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "alice", "alice")
        code, out, _ = await run_ssh(paths, "solo", "echo $HOME")
        assert (code, out.strip()) == (0, str(config.provider.data_dir / env["id"] / "home"))

        bob = await f.user("bob")
        status, body = await bob.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "second"}
        )
        assert status == 409, body
        message = body["error"]["message"]
        assert "serves one user only" in message and "another user" in message
        assert "alice" not in message, "who else uses the fleet is not bob's to know"
        assert "sandboxes are off" in message and "docs/operator.md" in message
        # The same user may go on.
        status, body = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "two"}
        )
        assert status == 202, body


async def test_sandboxes_on_where_there_can_be_none_stops_the_fleet_with_the_reason(
    start_fleet, sqlite_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The machine is the boundary: one that cannot make sandboxes (not root, say).
    from leeward.sandbox import sandbox

    cannot = sandbox.Support(False, "the host is not running as root", Cgroups(None))
    monkeypatch.setattr(sandbox, "probe", lambda rootfs=None: cannot)
    config = small_config(tmp_path, sqlite_url, regions=1)
    config.provider.sandboxes = "on"
    with pytest.raises(ConfigError, match=r"sandboxes are required .* not running as root"):
        async with start_fleet(config):
            pass


def test_limits_and_a_network_the_machine_cannot_give_are_said_once_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A machine with sandboxes but no writable cgroup controller and no slirp4netns.
    from leeward.providers.local import LocalProvider
    from leeward.sandbox import sandbox

    partial = sandbox.Support(True, "", Cgroups(None), network=False)
    monkeypatch.setattr(sandbox, "probe", lambda rootfs=None: partial)
    with caplog.at_level("INFO", logger="leeward.providers.local"):
        provider = LocalProvider(tmp_path / "environments")
    said = [r for r in caplog.records if r.name == "leeward.providers.local"]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "limits not enforced here: cpu, memory, pids" in said[0].getMessage()
    assert "the host's network, its loopback services included" in said[0].getMessage()
    assert provider.isolates_owners and provider.isolation == partial.describe()
