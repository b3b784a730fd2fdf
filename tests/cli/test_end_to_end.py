"""`leeward up`, create, config-ssh, the real OpenSSH client, extend, delete, `leeward down`:
the embedded fleet with the local provider and real agents, driven as a user would."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leeward.common.processes import pid_alive
from leeward.fleet.config import FleetConfig, HostConfig, RegionConfig, dump_config
from leeward_protocol.fleet import ContainerProfile, Flavor, FlavorKind, Hardware
from tests.conftest import free_port, until

from .sandbox import Sandbox, make_sandbox, run_in_pty

pytestmark = [
    pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's ssh"),
    pytest.mark.skipif(
        importlib.util.find_spec("leeward.providers.local") is None,
        reason="the local provider has not landed yet",
    ),
]


def cli_networks(count: int) -> list[str]:
    """/24s at random in 127.208.0.0/12: the CLI tests' range, apart from other test areas."""
    picked: set[str] = set()
    while len(picked) < count:
        picked.add(f"127.{random.randint(208, 223)}.{random.randint(0, 255)}.0/24")
    return sorted(picked)


def small_fleet(sandbox: Sandbox) -> FleetConfig:
    north, south = cli_networks(2)
    config = FleetConfig.model_validate(
        {
            "listen_port": free_port(),
            "heartbeat_seconds": 1.0,
            "pool_interval_seconds": 0.5,
            # What `leeward up` writes: a host agent per host, which the fleet asks.
            "provider": {"kind": "hosts", "ssh_port": free_port(), "stop_agents_on_exit": True},
            "regions": [
                RegionConfig(
                    name="north",
                    network=ipaddress.IPv4Network(north),
                    hosts=[HostConfig(name="north-h1", cpus=8, memory_gib=16)],
                ),
                RegionConfig(
                    name="south",
                    network=ipaddress.IPv4Network(south),
                    hosts=[HostConfig(name="south-h1", cpus=8, memory_gib=16)],
                ),
            ],
            "flavors": [
                Flavor(name="tiny", kind=FlavorKind.VM, hardware=Hardware(cpus=1, memory_gib=1))
            ],
            "profiles": [
                ContainerProfile(name="web", hardware=Hardware(cpus=1, memory_gib=1), warm_pool=1)
            ],
        }
    )
    path = sandbox.paths.embedded_dir / "fleet.toml"
    path.parent.mkdir(parents=True)
    path.write_text(dump_config(config))
    return config


@pytest.fixture
def fleet_sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, FleetConfig]]:
    sandbox = make_sandbox(tmp_path)
    config = small_fleet(sandbox)
    try:
        yield sandbox, config
    finally:
        down = sandbox.run("down", timeout=60)
        assert down.returncode == 0, down.stderr


def wait_for(what: str, check: Callable[[], Any], seconds: float = 30.0) -> None:
    """`until` (the suite's one deadline poll) for this test's synchronous steps."""
    asyncio.run(until(check, what, timeout=seconds))


def test_a_devserver_from_up_to_down(fleet_sandbox: tuple[Sandbox, FleetConfig]) -> None:
    sandbox, config = fleet_sandbox
    url = f"http://127.0.0.1:{config.listen_port}"
    paths = sandbox.paths

    up = sandbox.run("up", check=True)
    assert f"Started the embedded fleet at {url}" in up.stdout
    assert "Signed in as" in up.stdout
    assert "Started 2 host agent(s): north-h1, south-h1" in up.stdout, up.stdout
    again = sandbox.run("up", check=True)
    assert "already running" in again.stdout

    who = json.loads(sandbox.run("whoami", "--json", check=True).stdout)
    assert who["role"] == "admin"

    created = sandbox.run(
        "create",
        "devserver",
        "--flavor",
        "tiny",
        "--name",
        "box",
        "--lifespan",
        "8h",
        "--json",
        check=True,
    )
    box = json.loads(created.stdout)
    assert box["state"] == "running"
    assert box["fqdn"] == f"box.{box['region']}.leeward.test"
    assert "✓" in created.stderr  # the stages were shown

    unknown = sandbox.run("create", "devserver", "--flavor", "huge")
    assert unknown.returncode == 1
    assert "Error: Unknown flavor 'huge'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    configured = sandbox.run("config-ssh", "--no-include", check=True)
    assert "(box)" in configured.stdout
    ssh_config = paths.ssh_config.read_text()
    assert f"HostKeyAlias {box['fqdn']}" in ssh_config
    assert "StrictHostKeyChecking yes" in ssh_config
    assert paths.known_hosts.read_text().count("@cert-authority *.leeward.test ") == 1
    assert not (paths.ssh_dir.parent / "config").exists()  # --no-include

    real = subprocess.run(
        ["ssh", "-F", str(paths.ssh_config), "-o", "BatchMode=yes", "box", "--", "echo hello"],
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert real.returncode == 0, real.stderr
    assert real.stdout == "hello\n"

    # `leeward ssh` becomes ssh: its output and its exit code
    through = sandbox.run("ssh", "box", "--", "echo via-leeward; exit 3")
    assert through.stdout == "via-leeward\n"
    assert through.returncode == 3

    # a certificate about to expire is renewed before ssh needs it
    paths.certificate.write_text("ssh-ed25519-cert-v01@openssh.com AAAA expired\n")
    renewed = sandbox.run("ssh", "box", "--", "true")
    assert renewed.returncode == 0, renewed.stderr
    assert paths.certificate.read_text().startswith("ssh-ed25519-cert-v01@openssh.com AAAA")
    assert "expired" not in paths.certificate.read_text()

    # on a terminal, config-ssh asks before touching ~/.ssh/config
    user_config = Path(sandbox.env["HOME"]) / ".ssh" / "config"
    code, output = run_in_pty(sandbox, "config-ssh", answer="n")
    assert code == 0, output
    assert "at the top of" in output
    assert not user_config.exists()

    # --include puts the Include line at the top of ~/.ssh/config, once
    user_config.write_text("Host *\n    ServerAliveInterval 30\n")
    sandbox.run("config-ssh", "--include", check=True)
    sandbox.run("config-ssh", "--include", check=True)
    lines = [line for line in user_config.read_text().splitlines() if line.strip()]
    assert lines[1] == f"Include {paths.ssh_config}"
    assert lines.count(f"Include {paths.ssh_config}") == 1
    assert lines[-2:] == ["Host *", "    ServerAliveInterval 30"]

    listing = json.loads(sandbox.run("list", "--json", check=True).stdout)
    assert [(e["name"], e["state"]) for e in listing["environments"]] == [("box", "running")]

    extended = json.loads(sandbox.run("extend", "box", "--hours", "2", "--json", check=True).stdout)
    assert extended["expiresAt"] > box["expiresAt"]

    container = json.loads(
        sandbox.run("create", "container", "--profile", "web", "--json", check=True).stdout
    )
    assert container["state"] == "running"

    code, output = run_in_pty(sandbox, "delete", "box", answer="n")
    assert code != 0
    assert "Delete devserver box (box." in output
    assert json.loads(sandbox.run("show", "box", "--json", check=True).stdout)["state"] == "running"
    refused = sandbox.run("delete", "box")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    sandbox.run("delete", "box", "--yes", check=True)
    sandbox.run("delete", container["name"], "--yes", check=True)

    def box_gone() -> bool:
        shown = sandbox.run("show", "box", "--json")
        return shown.returncode != 0 or json.loads(shown.stdout)["state"] == "deleted"

    wait_for("box to be deleted", box_gone)

    # an operator's token for another user, straight from the database; login reads stdin
    token = sandbox.run(
        "fleet",
        "token",
        "create",
        "--config",
        str(paths.embedded_dir / "fleet.toml"),
        "--user",
        "bob",
        "--hours",
        "1",
        check=True,
    ).stdout.strip()
    sandbox.run("login", "--fleet", url, input=token + "\n", check=True)
    assert json.loads(sandbox.run("whoami", "--json", check=True).stdout) == {
        "user": "bob",
        "role": "user",
    }
    wrong = sandbox.run("login", "--fleet", url, "--token", "not-a-token")
    assert wrong.returncode == 1
    assert "did not accept this token" in wrong.stderr

    host_pid = int((paths.embedded_dir / "hosts" / "north-h1" / "host.pid").read_text())
    down = sandbox.run("down", check=True)
    assert "Stopped the embedded fleet." in down.stdout
    assert not pid_alive(host_pid), "down stops the host agents too"
    assert "not running" in sandbox.run("down", check=True).stdout
    restarted = sandbox.run("up", check=True)
    assert "as before" in restarted.stdout  # bob's stored token still works; no new one
    assert "bob" in restarted.stdout
    sandbox.run("down", check=True)
    after = sandbox.run("list")
    assert after.returncode == 1
    assert f"Cannot reach the fleet at {url}" in after.stderr
