"""The embedded fleet of `leeward up` / `leeward down`: one `leeward fleet serve` in the
background, with its config, database, environments, log and pid file in `Paths.embedded_dir`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leeward.cli.embedded_hosts import EmbeddedHosts
from leeward.cli.errors import CliError
from leeward.client.paths import Paths
from leeward.common.processes import listens_on, pid_alive, runs_with

if TYPE_CHECKING:
    from leeward.fleet.config import FleetConfig

START_SECONDS = 60.0
STOP_SECONDS = 30.0
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class EmbeddedFleet:
    directory: Path

    @classmethod
    def of(cls, paths: Paths) -> EmbeddedFleet:
        return cls(paths.embedded_dir)

    @property
    def config_path(self) -> Path:
        return self.directory / "fleet.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / "fleet.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "fleet.pid"

    @property
    def hosts(self) -> EmbeddedHosts:
        return EmbeddedHosts(self.directory / "hosts", self.config_path)

    # -- config --------------------------------------------------------------------------------

    def ensure_config(self, port: int | None) -> bool:
        """Write the default config if there is none (True if written). With `port`, an
        existing config gets that port; everything else in it is kept."""
        from leeward.common.files import write_private

        if not self.config_path.exists():
            from leeward.fleet.config import default_config, dump_config

            config = default_config()
            config.provider.kind = "hosts"  # one `leeward host serve` per host (embedded_hosts)
            config.provider.stop_agents_on_exit = True
            _on_namespaces_if_possible(config)
            config.dns.port = free_dns_port(config.dns.listen_host)
            if port is not None:
                config.listen_port = port
            write_private(self.config_path, dump_config(config), mode=0o644)
            return True
        if port is not None:
            import tomllib

            import tomli_w

            raw = tomllib.loads(self.config_path.read_text())
            if raw.get("listen_port") != port:
                raw["listen_port"] = port
                write_private(self.config_path, tomli_w.dumps(raw), mode=0o644)
        return False

    def ensure_dns_port(self) -> str | None:
        """Before a start: keep the config's DNS port if UDP and TCP are both free there, else
        write a free pair into the config. Returns the DNS server's `HOST:PORT` (None: off)."""
        import tomllib

        import tomli_w

        from leeward.common.files import write_private
        from leeward.fleet.config import ConfigError, load_config

        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            raise CliError(f"{exc}; fix it or delete it and run `leeward up` again.") from None
        if not config.dns.enabled:
            return None
        host, port = config.dns.listen_host, config.dns.port
        if port == 0 or not dns_port_free(host, port):
            port = free_dns_port(host)
            raw = tomllib.loads(self.config_path.read_text())
            raw.setdefault("dns", {})["port"] = port
            write_private(self.config_path, tomli_w.dumps(raw), mode=0o644)
        return f"{host}:{port}"

    def url(self) -> str:
        from leeward.fleet.config import ConfigError, load_config

        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            raise CliError(f"{exc}; fix it or delete it and run `leeward up` again.") from None
        if config.public_url:
            return config.public_url.rstrip("/")
        host = config.listen_host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - reading, not binding
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{config.listen_port}"

    # -- the process ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The embedded fleet's pid if it is alive (a stale pid file counts as not running)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if runs_with(pid, self.config_path) else None

    def start(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "leeward.cli",
            "fleet",
            "serve",
            "--config",
            str(self.config_path),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n--- leeward up: starting the fleet at {time.ctime()}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.directory,
            )
        self.pid_path.write_text(f"{process.pid}\n")
        return process.pid

    def wait_healthy(self, url: str, pid: int, *, seconds: float = START_SECONDS) -> None:
        """Until `pid` answers `/healthz` at `url`. An answer counts only from our own process,
        alive and holding the listening socket: another process that took the port (another
        fleet, whose `/healthz` answers too) is not the fleet we started, which dies of it."""
        port = self.listen_port()
        deadline = time.monotonic() + seconds
        someone_else = False
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                if someone_else or port_in_use(url):
                    raise port_taken(url, details=self.log_tail())
                raise CliError(
                    f"The embedded fleet stopped while starting: fix what its log "
                    f"({self.log_path}) says, then run `leeward up` again.",
                    details=self.log_tail(),
                )
            if healthy(url):
                # None: no /proc to tell by (macOS); our process is alive, as before.
                if port is None or listens_on(pid, port) is not False:
                    return
                someone_else = True
            time.sleep(POLL_SECONDS)
        if someone_else:
            raise port_taken(url, details=self.log_tail())
        raise CliError(
            f"The embedded fleet did not answer at {url} within {seconds:.0f} s: see its log "
            f"({self.log_path}); `leeward down` stops it.",
            details=self.log_tail(),
        )

    def listen_port(self) -> int | None:
        """The port the fleet listens on (its config's), None when the config cannot say."""
        from leeward.fleet.config import ConfigError, load_config

        try:
            return load_config(self.config_path).listen_port or None
        except ConfigError:
            return None

    def stop(
        self, *, seconds: float = STOP_SECONDS, on_wait: Callable[[], None] | None = None
    ) -> str:
        """SIGTERM the fleet and wait for it; SIGKILL its process group after the deadline.
        Returns what happened, for the user."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return "The embedded fleet is not running."
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while pid_alive(pid) and time.monotonic() < deadline:
            if on_wait is not None:
                on_wait()
            time.sleep(POLL_SECONDS)
        outcome = "Stopped the embedded fleet."
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            outcome = (
                f"The embedded fleet did not stop within {seconds:.0f} s of SIGTERM; killed it "
                f"(see {self.log_path})."
            )
        self.pid_path.unlink(missing_ok=True)
        return outcome

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("  " + line for line in text.splitlines()[-lines:])


def _on_namespaces_if_possible(config: FleetConfig) -> None:
    """Where the machine can (root, `ip netns`), every host a network namespace and every
    region a range routed to them (198.18.0.0/15, never routed on the internet); otherwise
    loopback addresses, said once here."""
    import ipaddress

    from leeward.providers.fabric import Fabric

    ok, why = Fabric.probe()
    if not ok:
        print(
            f"leeward up: environments get loopback addresses ({why}); live migrations and "
            "region cuts are then modelled by the agents, not made in the network.",
            file=sys.stderr,
        )
        return
    config.network.kind = "namespaces"
    for index, region in enumerate(config.regions):
        region.network = ipaddress.IPv4Network(f"198.18.{16 * (index + 1)}.0/20")


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def dns_port_free(host: str, port: int) -> bool:
    """Whether both UDP and TCP `port` can be bound on `host` (a DNS server needs both)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
    except OSError:
        return False
    return True


def free_dns_port(host: str) -> int:
    """A port whose UDP and TCP are both free on `host`."""
    import socket

    for _ in range(32):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
        if dns_port_free(host, port):
            return port
    raise CliError(f"No free port for the fleet's DNS server on {host}: too many ports in use.")


def port_taken(url: str, *, details: str = "") -> CliError:
    """The user guide's promise: when the fleet's port is taken, `up` says so."""
    return CliError(
        f"Something else is listening at {url}: stop it, or run `leeward up --port N` with a "
        "free port.",
        details=details,
    )


def port_in_use(url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.5):
            return True
    except OSError:
        return False
