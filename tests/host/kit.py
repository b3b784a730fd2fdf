"""Host agents for tests: `leeward host serve` as its own process, as an operator runs it, and
joining a set of them to a running fleet (a token each, then until the fleet hears every one)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from tests.conftest import Api, until


class HostAgent:
    """One `leeward host serve`, as an operator runs it."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, fleet_url: str, issued: dict, data_dir: Path, **more: object) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        token = self.directory / "token"
        token.write_text(issued["token"] + "\n")
        token.chmod(0o600)
        (self.directory / "host.toml").write_text(
            tomli_w.dumps(
                {
                    "name": self.name,
                    "fleet_url": fleet_url,
                    "token_file": str(token),
                    "fleet_key": issued["fleetKey"],
                    "listen_host": "127.0.0.1",
                    "listen_port": 0,
                    "data_dir": str(data_dir),
                    "stop_environments_on_exit": True,
                    **more,
                }
            )
        )

    def start(self) -> None:
        with (self.directory / "host.log").open("ab") as log:
            config = str(self.directory / "host.toml")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "leeward.cli", "host", "serve", "--config", config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return (self.directory / "host.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def hosts(admin: Api) -> dict[str, dict]:
    status, body = await admin.call("GET", "/v1/admin/hosts")
    assert status == 200, body
    return {h["name"]: h for h in body["hosts"]}


async def join(
    admin: Api,
    fleet_url: str,
    agents: Mapping[str, HostAgent],
    data_dir: Path,
    more: Callable[[int, str], dict[str, Any]] = lambda index, name: {},
) -> None:
    """Issue each host its token, start its agent (with `more(index, name)` in its host.toml)
    and wait until the fleet hears every one; an agent that dies meanwhile says why."""
    for index, (name, agent) in enumerate(agents.items()):
        status, issued = await admin.call("POST", f"/v1/admin/hosts/{name}/token", {})
        assert status == 201, issued
        agent.configure(fleet_url, issued, data_dir, **more(index, name))
        agent.start()

    async def joined() -> bool:
        for agent in agents.values():
            assert agent.proc is not None and agent.proc.poll() is None, agent.log()
        return all(h["reachable"] for h in (await hosts(admin)).values())

    await until(joined, "every host agent joined", timeout=30)
