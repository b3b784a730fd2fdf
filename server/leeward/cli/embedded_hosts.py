"""The host agents of `leeward up`: one `leeward host serve` per host of the embedded fleet's
config, on this machine, each with its own directory `embedded_dir/hosts/NAME/` (host.toml, its
token, log and pid). They join the fleet as any host does: a host token (issued through the
store, as the first admin token is) and the fleet's public command key, which they pin.

The hosts of one machine share its disk: every host agent keeps environments in the fleet's
`provider.data_dir`, so a live migration between two of them finds the environment there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leeward.cli.errors import CliError
from leeward.common.processes import pid_alive, runs_with

if TYPE_CHECKING:
    from leeward.fleet.config import FleetConfig

STOP_SECONDS = 20.0
HOST_PORT = 7070
"""A host agent's port in its own namespace (each host has its own addresses)."""
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class EmbeddedHosts:
    directory: Path
    fleet_config: Path

    def names(self) -> list[str]:
        """The hosts of the fleet's config whose agents run here ([] unless provider.kind is
        "hosts": a fleet that starts environments itself has no host agents)."""
        config = self._config()
        if config.provider.kind != "hosts":
            return []
        return [host.name for region in config.regions for host in region.hosts]

    def _config(self) -> FleetConfig:
        from leeward.fleet.config import ConfigError, load_config

        try:
            return load_config(self.fleet_config)
        except ConfigError as exc:
            raise CliError(f"{exc}; fix it or delete it and run `leeward up` again.") from None

    def _dir(self, name: str) -> Path:
        return self.directory / name

    def pid(self, name: str) -> int | None:
        """The host agent's pid if it is alive and really ours (not a reused pid)."""
        try:
            pid = int((self._dir(name) / "host.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if runs_with(pid, self._dir(name) / "host.toml") else None

    def start(self, url: str) -> list[str]:
        """Start the agents that do not run (each with a new token); returns their names."""
        import tomli_w

        from leeward.common.files import write_private
        from leeward.fleet.bootstrap import issue_host_tokens
        from leeward.providers.fabric import Fabric

        config = self._config()
        missing = [name for name in self.names() if self.pid(name) is None]
        if not missing:
            return []
        tokens = asyncio.run(issue_host_tokens(config, missing))
        indices = {h.name: i for i, h in enumerate(h for r in config.regions for h in r.hosts)}
        fleet_url = url
        if config.network.kind == "namespaces":  # from inside the hosts' namespaces
            port = url.rsplit(":", 1)[1]
            address = Fabric(config.network.prefix, config.network.transit).fleet_address
            fleet_url = f"http://{address}:{port}"
        assert config.provider.data_dir is not None
        for name in missing:
            directory = self._dir(name)
            directory.mkdir(parents=True, exist_ok=True)
            token_file = directory / "token"
            write_private(token_file, tokens[name].token + "\n", mode=0o600)
            host = {
                "name": name,
                "fleet_url": fleet_url,
                "token_file": str(token_file),
                "fleet_key": tokens[name].fleet_key,
                "listen_host": "127.0.0.1",
                "listen_port": 0,
                "data_dir": str(config.provider.data_dir),
                "sandboxes": config.provider.sandboxes,
                "stop_environments_on_exit": True,
            }
            if config.provider.image_cache is not None:
                host["image_cache"] = str(config.provider.image_cache)
            if config.network.kind == "namespaces":
                # In its own namespace, on its end of its link, where the fleet reaches it.
                fabric = Fabric(config.network.prefix, config.network.transit)
                host["netns"] = str(fabric.namespace(name))
                host["fabric_prefix"] = config.network.prefix
                host["fabric_transit"] = str(config.network.transit)
                host["listen_host"] = str(fabric.transit_of(indices[name])[1].ip)
                host["listen_port"] = HOST_PORT
            write_private(directory / "host.toml", tomli_w.dumps(host), mode=0o644)
            command = [sys.executable, "-m", "leeward.cli", "host", "serve", "--config"]
            with (directory / "host.log").open("ab") as log:
                log.write(f"\n--- leeward up: starting host {name} at {time.ctime()}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    [*command, str(directory / "host.toml")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=directory,
                )
            (directory / "host.pid").write_text(f"{process.pid}\n")
        return missing

    def wait_reachable(self, seconds: float = 60.0) -> None:
        """Until the fleet hears every host agent (or say which did not join, and why). Read
        from the fleet's store: whoever is signed in, admin or not, may run `leeward up`."""
        from leeward.fleet.bootstrap import reachable_hosts

        config = self._config()
        wanted = set(self.names())
        deadline = time.monotonic() + seconds
        while True:
            heard = asyncio.run(reachable_hosts(config))
            if wanted <= heard:
                return
            dead = [name for name in sorted(wanted - heard) if self.pid(name) is None]
            if dead or time.monotonic() > deadline:
                name = (dead or sorted(wanted - heard))[0]
                raise CliError(
                    f"Host {name}'s agent did not join the fleet"
                    + (" (it stopped)" if dead else f" within {seconds:.0f} s")
                    + f": see {self._dir(name) / 'host.log'}; `leeward down` stops the rest.",
                    details=self.log_tail(name),
                )
            time.sleep(POLL_SECONDS * 3)

    def stop(self) -> list[str]:
        """SIGTERM every host agent (they stop their environments), SIGKILL after the
        deadline; returns the names of those that had to be killed."""
        running = {name: pid for name in self._present() if (pid := self.pid(name)) is not None}
        for pid in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while any(pid_alive(p) for p in running.values()) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        killed = []
        for name, pid in running.items():
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed.append(name)
            (self._dir(name) / "host.pid").unlink(missing_ok=True)
        return killed

    def _present(self) -> list[str]:
        """Hosts with a directory here, in the config or not any more."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if (p / "host.toml").exists())

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self._dir(name) / "host.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("  " + line for line in text.splitlines()[-lines:])
