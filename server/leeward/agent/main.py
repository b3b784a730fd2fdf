"""The environment agent: `python -m leeward.agent --config PATH [--ready-fd N]`.

One per environment, started by the provider. It serves SSH, reports heartbeats to the fleet
and answers the provider on its control socket. When its SSH listener accepts connections it
writes "ready" to the ready pipe; if it cannot start, it writes the reason there instead and
exits non-zero. SIGTERM stops it cleanly; SIGHUP re-reads the config, like `reload`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from leeward import __version__
from leeward.agent import control
from leeward.agent.banner import Banner
from leeward.agent.config import AgentConfig, AgentConfigError
from leeward.agent.fleet import AgentFleet, FleetEndpoint
from leeward.agent.heartbeat import Heartbeat
from leeward.agent.keeper import Keeper
from leeward.agent.setup import Setup
from leeward.agent.ssh import (
    ConnectionRegistry,
    Login,
    Trust,
    host_keys,
    listen,
    serve_relayed,
)
from leeward.common.netns import current, enter
from leeward.relay.agent import RelayServer, RelaySettings
from leeward.relay.handshake import HostIdentity
from leeward.relay.stream import MIB
from leeward.sandbox.owners import OwnerError, home_view
from leeward.sandbox.sandbox import SandboxError

if TYPE_CHECKING:
    from leeward.agent.sync.profilesync import ProfileSync

log = logging.getLogger("leeward.agent")


class StartError(Exception):
    """The agent cannot serve; the message is what the provider shows."""


class Agent:
    def __init__(self, config_path: Path, config: AgentConfig, view: Path | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.registry = ConnectionRegistry(Trust(config.owner, config.user_ca))
        self.keeper = Keeper(config_path.parent, config, view)
        self.fleet = AgentFleet(self._endpoint)
        self.heartbeat = Heartbeat(
            self.fleet,
            lambda: self.registry.sessions,
            lambda: self.config.heartbeat_seconds,
            agent_version=__version__,
            activity=lambda: (
                self.registry.editor_sessions,
                self.registry.last_input.idle_seconds,
            ),
        )
        self._acceptor: object | None = None
        self._keys: list[tuple[object, object]] = []
        self.relay: RelayServer | None = None
        self._control: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self.sync: ProfileSync | None = None
        self.banner = Banner(
            self.fleet,
            lambda: self.keeper.current().home,
            lambda: self.sync.ssh_banner if self.sync is not None else True,
        )
        # features and one-offs, once ready
        self.setup = Setup(
            lambda: self.config,
            self.fleet,
            place=self.keeper.current,
            files=lambda: self.keeper.files,
        )

    def login(self) -> Login:
        """How the next session runs (its sandbox, started again if it died)."""
        c = self.config
        return Login(self.keeper.current(), c.environment_id, c.fqdn, banner=self.banner)

    def _endpoint(self) -> FleetEndpoint:
        """Read at each request: a reload may bring a new token or fleet URL."""
        c = self.config
        return FleetEndpoint(c.fleet_url, c.agent_token, c.environment_id)

    async def start(self) -> None:
        config = self.config
        try:
            config.home.mkdir(parents=True, exist_ok=True)
            os.chdir(config.home)  # SFTP and scp paths are relative to the home
        except OSError as exc:
            raise StartError(f"cannot use home {config.home}: {exc.strerror}") from None
        try:
            self.keeper.enter(config)
        except (SandboxError, OSError) as exc:
            raise StartError(f"cannot start the sandbox: {exc}") from None
        try:
            keys = host_keys(config.host_key, config.host_certificate)
        except Exception as exc:
            raise StartError(f"bad host key or certificate: {exc}") from None
        try:
            self._control = await control.serve(config.control_socket, self._on_control)
        except (control.ControlError, OSError) as exc:
            raise StartError(f"control socket {config.control_socket}: {exc}") from None
        self._keys = keys
        if config.relay_port is not None:
            self.relay = RelayServer(
                HostIdentity(keys[0][0], config.host_certificate),
                config.fqdn,
                lambda sock: serve_relayed(
                    sock,
                    self.registry,
                    self._keys,
                    self.login,
                    sftp_inside=config.sandbox is not None,
                ),
                RelaySettings(
                    buffer_bytes=config.relay_buffer_mib * MIB,
                    keep_seconds=config.relay_keep_seconds,
                ),
            )
        await self._listen()
        self._tasks.append(asyncio.create_task(self.heartbeat.run(), name="heartbeat"))
        log.info(
            "environment %s (%s) serving SSH on %s:%d for %s",
            config.environment_id,
            config.fqdn,
            config.listen_address,
            config.listen_port,
            config.owner or "nobody (warm)",
        )
        await self._sync_profile()

    async def _sync_profile(self) -> None:
        """The owner's profile into the home before the environment is ready (within 10 s),
        then kept in sync both ways; warm (no owner): nothing. A new owner starts afresh."""
        owner = self.config.owner
        if self.sync is not None and self.sync.state.owner == owner:
            return
        if self.sync is not None:
            await self.sync.stop()
            self.sync = None
        if owner is None:
            return
        # Imported with the first owner: warm agents do not pay for the profile models.
        from leeward.agent.sync.profilesync import ProfileSync

        place = self.keeper.current()  # in a sandbox: the owner's view of the home
        self.sync = ProfileSync(
            place.home,
            self.fleet,
            owner=owner,
            name=self.config.name,
            files=self.keeper.files,
            alias=place.login_home if place.sandboxed else None,
        )
        await self.sync.begin(within=10.0)
        self.sync.start()

    async def _listen(self) -> None:
        config = self.config
        port = config.listen_port
        try:
            self._acceptor = await listen(
                config.listen_address,
                port,
                self.registry,
                self._keys,
                self.login,
                sftp_inside=config.sandbox is not None,
            )
            if self.relay is not None and config.relay_port is not None:
                port = config.relay_port
                await self.relay.listen(config.listen_address, port)
        except OSError as exc:
            raise StartError(
                f"cannot listen on {config.listen_address}:{port}: "
                f"{os.strerror(exc.errno) if exc.errno else exc}"
            ) from None

    async def blackout(self, seconds: float) -> dict[str, object]:
        """The network attachment goes dark (a live migration's blackout): listeners closed,
        every TCP connection on it reset; relay sessions and the SSH connections inside them
        stay. Back when both listeners accept again."""
        async with self._reload_lock:  # one at a time, and no reload of a closed listener
            return await self._blackout(seconds)

    async def _blackout(self, seconds: float) -> dict[str, object]:
        await self._close_listeners()
        direct = self.registry.reset_direct()
        links = self.relay.reset_links() if self.relay is not None else 0
        log.info(
            "blackout for %.3g s: reset %d SSH connections, %d relay links", seconds, direct, links
        )
        await asyncio.sleep(seconds)
        await self._listen()
        log.info("blackout over: listening again")
        return {"ok": True, "resetSSH": direct, "resetRelayLinks": links}

    async def attach(self, netns: Path) -> dict[str, object]:
        """The environment now lives on another host (a live migration in the local fleet's
        network namespaces): listen there. The listeners move; the connections made on the old
        host stay where they were, and the network resets them (their packets now reach the new
        host, which knows nothing of them); relay sessions resume on the new host. Sockets made
        from now on (heartbeats included) are made there too."""
        async with self._reload_lock:
            await self._close_listeners()
            try:
                enter(netns)
            except OSError as exc:
                await self._listen()  # still where it was: keep serving there
                return {"ok": False, "error": f"cannot enter {netns}: {exc.strerror or exc}"}
            await self._listen()
            log.info("listening on host network %s (%s)", netns, current())
            return {"ok": True, "network": current()}

    async def _close_listeners(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()  # type: ignore[attr-defined]
            await self._acceptor.wait_closed()  # type: ignore[attr-defined]
            self._acceptor = None
        if self.relay is not None:
            await self.relay.close_listener()

    async def _on_control(self, message: dict[str, object]) -> dict[str, object]:
        op = message.get("op")
        if op == "status":
            return {
                "ok": True,
                "environmentId": self.config.environment_id,
                "owner": self.config.owner,
                "sessions": self.registry.sessions,
                "relaySessions": len(self.relay.sessions) if self.relay is not None else 0,
                "relayLinks": self.relay.links if self.relay is not None else 0,
                "relayBoot": self.relay.boot if self.relay is not None else None,
                "pid": os.getpid(),
                "agentVersion": __version__,
                "sandbox": self.keeper.status(),
            }
        if op == "reload":
            await self.reload()
            return {"ok": True}
        if op == "blackout":
            seconds = message.get("seconds", 0)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                return {"ok": False, "error": "blackout needs 'seconds', a number >= 0"}
            return await self.blackout(float(seconds))
        if op == "attach":
            netns = message.get("netns")
            if not isinstance(netns, str) or not netns.startswith("/"):
                return {"ok": False, "error": "attach needs 'netns', an absolute path"}
            return await self.attach(Path(netns))
        return {
            "ok": False,
            "error": f"unknown op {op!r}; expected 'status', 'reload', 'blackout' or 'attach'",
        }

    async def reload(self) -> None:
        """Re-read the config and apply it; connections under the old identity are closed."""
        async with self._reload_lock:
            new = AgentConfig.load(self.config_path)
            old = self.config
            if new.environment_id != old.environment_id:
                raise ValueError(
                    f"the config is for {new.environment_id}, this agent is {old.environment_id}"
                )
            changed = old.fixed_changes(new)
            if changed:
                raise ValueError(f"cannot change {', '.join(changed)} of a running agent")
            keys = host_keys(new.host_key, new.host_certificate)
            assert self._acceptor is not None
            # New connections get the new host key, certificate and trust from here on.
            self._acceptor.update(server_host_keys=keys)  # type: ignore[attr-defined]
            self._keys = keys
            if self.relay is not None:
                self.relay.identity = HostIdentity(keys[0][0], new.host_certificate)
                self.relay.fqdn = new.fqdn
            self.registry.set_trust(Trust(new.owner, new.user_ca))
            self.keeper.enter(new)  # a warm container's owner: its sandbox
            self.config = new
            await self.registry.close_all()
            self.heartbeat.reset()
            await self._sync_profile()  # a warm container claimed: its owner's profile first
            log.info("reloaded: owner %s, host identity renewed", new.owner or "nobody (warm)")
            self.setup.start()  # a warm container's new owner; installed steps are not rerun

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        await self.setup.stop()
        if self._acceptor is not None:
            self._acceptor.close()  # type: ignore[attr-defined]
        if self.relay is not None:
            await self.relay.close()
        await self.registry.close_all(grace=3.0)
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(OSError):
                self.config.control_socket.unlink()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("stopped")


def _setup_logging(log_file: Path) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    # The provider may point stderr at the same file (for tracebacks); do not log twice.
    try:
        err, own = os.fstat(2), os.stat(log_file)
        same = (err.st_dev, err.st_ino) == (own.st_dev, own.st_ino)
    except OSError:
        same = False
    if not same:
        stderr_handler = logging.StreamHandler(sys.stderr)
        stderr_handler.setFormatter(formatter)
        root.addHandler(stderr_handler)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def _default_signals() -> None:
    """Signals the agent's starter ignored (SIGQUIT, SIGINT under nohup...) would stay ignored
    in every session's processes; sshd gives them the defaults, and so does the agent."""
    keep = {signal.SIGPIPE, signal.SIGXFSZ}  # Python's own; subprocess restores them
    for sig in signal.valid_signals():
        if sig in keep or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)


def _tell(ready_fd: int | None, line: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(ready_fd)


async def _serve(config_path: Path, ready_fd: int | None) -> int:
    try:
        config = AgentConfig.load(config_path)
    except AgentConfigError as exc:
        _tell(ready_fd, f"error: {exc}")
        print(f"leeward agent: {exc}", file=sys.stderr)
        return 2
    view = None
    if config.sandbox is not None:
        try:  # first: no thread may run yet
            view = home_view(config.home)
        except OwnerError as exc:
            _tell(ready_fd, f"error: {exc}")
            print(f"leeward agent: {exc}", file=sys.stderr)
            return 1
    _setup_logging(config.log_file)
    _default_signals()
    agent = Agent(config_path, config, view)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)

    pending: set[asyncio.Task[None]] = set()

    def reload_on_hup() -> None:
        async def reload() -> None:
            try:
                await agent.reload()
            except Exception as exc:
                log.error("reload on SIGHUP failed: %s", exc)

        task = asyncio.ensure_future(reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    try:
        await agent.start()
    except StartError as exc:
        log.error("cannot start: %s", exc)
        await agent.stop()
        _tell(ready_fd, f"error: {exc}")
        return 1
    _tell(ready_fd, "ready")
    agent.setup.start()  # after ready: setup never holds the environment back
    await stopping.wait()
    log.info("stopping on signal")
    await agent.stop()
    return 0


def run(config_path: Path, ready_fd: int | None = None) -> int:
    """Run the agent until SIGTERM; the exit status (0 on a clean stop)."""
    return asyncio.run(_serve(config_path, ready_fd))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leeward agent", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the agent's JSON config")
    parser.add_argument(
        "--ready-fd", type=int, default=None, help="write 'ready' or the error here, then close it"
    )
    args = parser.parse_args(argv)
    return run(args.config, args.ready_fd)
