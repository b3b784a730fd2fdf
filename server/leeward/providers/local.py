"""The local provider: every environment is one agent process on this machine, and (where the
machine allows: root, bubblewrap, user namespaces) a sandbox of its own that the agent's
sessions join (leeward.sandbox), with its flavor's or profile's image and its owner's host uid.

An environment's state lives in `data_dir/<environment id>/`: `home/` (its disk), `agent.json`
(its config, mode 0600), `agent.log`, `agent.pid`, and `sandbox.json`. Agents and sandboxes
run in their own sessions, so they outlive the fleet (as VMs outlive their control plane); a new
provider over the same data_dir finds them again through `running()`. `owners.json`, next to
data_dir (which holds environments only), keeps each owner's host uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from leeward.agent import control
from leeward.agent.config import AgentConfig, SandboxConfig
from leeward.common.threads import to_thread_to_the_end
from leeward.providers import homes
from leeward.providers.base import EnvironmentSpec, ProviderError
from leeward.sandbox import images
from leeward.sandbox import sandbox as sandboxes
from leeward.sandbox.cgroups import Cgroups
from leeward.sandbox.owners import OwnerError, host_uid
from leeward_protocol.host import (
    BackupOrder,
    BackupProgress,
    BackupResult,
    RestoreOrder,
    RestorePathsOrder,
    RestoreResult,
)

log = logging.getLogger("leeward.providers.local")

T = TypeVar("T")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
GIB = 1 << 30
PIDS_MAX = 4096
"""Processes (threads included) one environment may have at once: a fork bomb stops there."""

Sandboxes = Literal["auto", "on", "off"]


def default_runtime_dir() -> Path:
    """Where control sockets go: short, private. Unix socket paths must fit in 108 bytes, which
    the data dir (or pytest's tmp dirs) would not."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and len(xdg) < 60:
        return Path(xdg) / "leeward"
    return Path(f"/tmp/leeward-{os.getuid()}")  # noqa: S108 - checked: ours, mode 0700


class LocalProvider:
    name = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        stop_agents_on_exit: bool = False,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        runtime_dir: Path | None = None,
        sandboxes: Sandboxes = "auto",
        image_cache: Path | None = None,
        netns: Path | None = None,
        egress: Path | None = None,
    ) -> None:
        """`netns`: the network namespace agents are started in (a host of the local fleet's
        fabric, leeward.providers.fabric); None: this process's own. `egress`: the namespace
        their sandboxes reach the outside from (the fabric's `world`)."""
        self._data_dir = data_dir.resolve()
        self.netns = netns
        self.egress = egress
        self._image_cache = image_cache
        self.owners_file = self._data_dir.parent / "owners.json"
        self.support = _support(sandboxes)
        self.isolates_owners = self.support.ok
        self.isolation = self.support.describe()
        # Said once, at start: what isolation environments get here, and what is not enforced.
        if not self.support.ok or self.support.cgroups.unenforced:
            log.warning("environments: %s", self.isolation)
        else:
            log.info("environments: %s", self.isolation)
        self._stop_agents_on_exit = stop_agents_on_exit
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._runtime_dir = runtime_dir or default_runtime_dir()
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the Provider interface -------------------------------------------------------------

    async def start(self, spec: EnvironmentSpec) -> None:
        async with self._lock(spec.id):
            config = await self._config(spec)
            pid = await self._live_pid(spec.id)
            if pid is not None:
                current = self._read_config(spec.id)
                if current == config:
                    return
                if current is not None and not current.fixed_changes(config):
                    await self._reload(spec.id, config)
                    return
                # Another address or port: the agent must start again (its home stays).
                await self._terminate(spec.id, pid)
            await self._spawn(spec.id, config)

    async def assign(self, spec: EnvironmentSpec) -> None:
        async with self._lock(spec.id):
            if await self._live_pid(spec.id) is None:
                raise ProviderError(f"environment {spec.id}: its agent is not running; start it")
            current = self._read_config(spec.id)
            config = await self._config(spec)
            if current is not None:
                moved = current.fixed_changes(config)
                if moved:
                    raise ProviderError(
                        f"environment {spec.id}: assign cannot change {', '.join(moved)}"
                    )
            await self._reload(spec.id, config)

    async def stop(self, environment_id: str) -> None:
        async with self._lock(environment_id):
            directory = self._dir(environment_id)
            pid = await self._live_pid(environment_id)
            if pid is not None:
                await self._terminate(environment_id, pid)
            await to_thread_to_the_end(self._stop_sandbox, environment_id)
            socket = self._socket(environment_id)
            await asyncio.to_thread(_remove, directory, socket)

    async def suspend(self, environment_id: str) -> None:
        """The agent and the sandbox stop; the directory (home, config) stays, and `start`
        of the same spec runs the agent again over the same home."""
        await self.power_off([environment_id])

    async def migrate(self, environment_id: str, host: str, blackout_seconds: float) -> None:
        """Here a host is only a placement record, so the agent stays where it is (`host` is
        not used). What a real live migration does to the network is modelled: the agent's
        listeners close and every open connection is reset for the blackout, then it answers
        again (DESIGN.md)."""
        async with self._lock(environment_id):
            if await self._live_pid(environment_id) is None:
                raise ProviderError(f"environment {environment_id}: its agent is not running")
            config = self._read_config(environment_id)
            if config is None:
                raise ProviderError(f"environment {environment_id}: its agent config is missing")
            await _ask_agent(
                environment_id,
                config,
                {"op": "blackout", "seconds": blackout_seconds},
                within=blackout_seconds + 20.0,
                late="did not come back after its blackout",
                refused="refused the migration",
            )

    def address_of(self, environment_id: str) -> str | None:
        """The address its agent was started on; None for an environment not on this disk."""
        config = self._read_config(environment_id)
        return config.listen_address if config is not None else None

    async def attach(self, environment_id: str, netns: Path) -> None:
        """Have the environment's agent listen in `netns` from now on (its environment moved
        to that host of the fabric); its processes, sandbox and sessions carry on."""
        async with self._lock(environment_id):
            config = self._read_config(environment_id)
            if config is None or await self._live_pid(environment_id) is None:
                raise ProviderError(f"environment {environment_id}: its agent is not running")
            await _ask_agent(
                environment_id,
                config,
                {"op": "attach", "netns": str(netns)},
                within=20.0,
                late="did not listen on its new host in time",
                refused="could not move to its new host",
            )

    async def alive(self, environment_ids: list[str]) -> set[str]:
        """Which of these have their agent process alive (no question asked of the agent:
        cheap enough for every heartbeat, whatever load the agents are under)."""
        return {i for i in environment_ids if await self._live_pid(i) is not None}

    async def running(self, environment_ids: list[str]) -> set[str]:
        ids = list(dict.fromkeys(environment_ids))
        alive = await asyncio.gather(*(self._answers(i) for i in ids))
        return {i for i, ok in zip(ids, alive, strict=True) if ok}

    async def close(self) -> None:
        if not self._stop_agents_on_exit:
            return
        ids = [p.name for p in self._data_dir.iterdir()] if self._data_dir.is_dir() else []
        await self.power_off([i for i in ids if _ID_RE.match(i)])

    async def power_off(self, environment_ids: list[str]) -> None:
        """The machine powers off, for these environments: agents and sandboxes stop, their
        disks stay for the next start. (A host agent of `leeward up` powers off its own, not
        the other hosts' that share this disk.)"""
        for environment_id in environment_ids:
            async with self._lock(environment_id):
                pid = await self._live_pid(environment_id)
                if pid is not None:
                    await self._terminate(environment_id, pid)
                await to_thread_to_the_end(self._stop_sandbox, environment_id)

    # -- backups (leeward.providers.homes) -------------------------------------------------

    async def backup(
        self,
        environment_id: str,
        order: BackupOrder,
        on_progress: Callable[[BackupProgress], None] | None = None,
    ) -> BackupResult:
        return await homes.backup(self._dir(environment_id), order, self._caches(), on_progress)

    async def restore(self, environment_id: str, order: RestoreOrder) -> RestoreResult:
        async with self._lock(environment_id):
            return await homes.restore(
                self._dir(environment_id),
                order,
                self._caches(),
                self.owners_file,
                self.support.ok,
            )

    async def restore_paths(self, environment_id: str, order: RestorePathsOrder) -> RestoreResult:
        return await homes.restore_paths(
            self._dir(environment_id), order, self._caches(), self.owners_file, self.support.ok
        )

    def _caches(self) -> Path:
        return homes.cache_root_of(self._data_dir)

    # -- sandboxes -------------------------------------------------------------------------

    async def _sandbox(self, spec: EnvironmentSpec) -> SandboxConfig | None:
        """The sandbox an agent runs its sessions in: its image (built first if this machine
        has not got it yet) and its owner's uid; None where this machine makes no sandboxes."""
        if not self.support.ok:
            return None
        try:
            image = await to_thread_to_the_end(self.image, spec.image)
            owner = spec.identity.owner
            registry = self.owners_file
            uid = None if owner is None else await asyncio.to_thread(host_uid, registry, owner)
        except (images.ImageError, OwnerError) as exc:
            raise ProviderError(f"environment {spec.id}: {exc}") from None
        hardware = spec.hardware
        return SandboxConfig(
            image=f"{image.name}@{image.digest[:12]}",
            rootfs=image.rootfs,
            uid=uid,
            cpus=float(hardware.cpus) if hardware.cpus else None,
            memory_bytes=hardware.memory_gib * GIB if hardware.memory_gib else None,
            pids=PIDS_MAX,
            own_network=self.support.network,
            egress=self.egress,
        )

    def image(self, name: str) -> images.Image:
        """The image `name`, built now if missing (blocking: one build per image per machine,
        whoever asks)."""
        return images.ensure(name, cache=self._image_cache, progress=log.info)

    def _stop_sandbox(self, environment_id: str) -> None:
        directory = self._dir(environment_id)
        if sandboxes.stop(directory, self.support.cgroups, environment_id):
            log.info("environment %s: sandbox stopped", environment_id)

    # -- files ----------------------------------------------------------------------------

    def _lock(self, environment_id: str) -> asyncio.Lock:
        return self._locks.setdefault(environment_id, asyncio.Lock())

    def _dir(self, environment_id: str) -> Path:
        if not _ID_RE.match(environment_id):
            raise ProviderError(f"environment id {environment_id!r} is not a valid identifier")
        return self._data_dir / environment_id

    def _socket(self, environment_id: str) -> Path:
        digest = hashlib.sha256(f"{self._data_dir}\0{environment_id}".encode()).hexdigest()
        return self._runtime_dir / f"{digest[:20]}.sock"

    async def _config(self, spec: EnvironmentSpec) -> AgentConfig:
        directory = self._dir(spec.id)
        sandbox = await self._sandbox(spec)
        return AgentConfig(
            environment_id=spec.id,
            name=spec.name,
            fqdn=spec.fqdn,
            owner=spec.identity.owner,
            listen_address=spec.address,
            listen_port=spec.ssh_port,
            relay_port=spec.relay_port,
            host_key=spec.identity.host_key,
            host_certificate=spec.identity.host_certificate,
            user_ca=spec.user_ca,
            fleet_url=spec.fleet_url,
            agent_token=spec.identity.agent_token,
            heartbeat_seconds=spec.heartbeat_seconds,
            home=directory / "home",
            control_socket=self._socket(spec.id),
            log_file=directory / "agent.log",
            sandbox=sandbox,
        )

    def _read_config(self, environment_id: str) -> AgentConfig | None:
        try:
            return AgentConfig.load(self._dir(environment_id) / "agent.json")
        except Exception:
            return None

    def _read_pid(self, environment_id: str) -> int | None:
        try:
            return int((self._dir(environment_id) / "agent.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_agent(self, environment_id: str, pid: int) -> bool:
        """Whether `pid` is this environment's agent (and not a recycled pid)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        config = str(self._dir(environment_id) / "agent.json").encode()
        return b"leeward.agent" in argv and config in argv

    async def _live_pid(self, environment_id: str) -> int | None:
        pid = self._read_pid(environment_id)
        if pid is None or not self._is_agent(environment_id, pid):
            return None
        return pid

    async def _answers(self, environment_id: str) -> bool:
        try:
            if await self._live_pid(environment_id) is None:
                return False
            async with asyncio.timeout(3.0):
                status = await control.request(self._socket(environment_id), {"op": "status"})
        except (ProviderError, control.ControlError, TimeoutError, ValueError):
            return False
        return status.get("ok") is True and status.get("environmentId") == environment_id

    def _log_tail(self, environment_id: str, lines: int = 12) -> str:
        try:
            text = (self._dir(environment_id) / "agent.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(empty log)"

    # -- processes ------------------------------------------------------------------------

    async def _spawn(self, environment_id: str, config: AgentConfig) -> None:
        directory = self._dir(environment_id)
        config_path = directory / "agent.json"
        # A thread cannot be cancelled: if this start is, wait for the thread to finish before
        # the lock is let go, or a stop() could remove the directory while it is being filled.
        await to_thread_to_the_end(_prepare, directory, config, config_path, self._runtime_dir)
        ready_r, ready_w = os.pipe()
        # The thread starts the agent and records its pid together. If this start is
        # cancelled (the fleet stopping) while the thread runs, the agent starts anyway: wait
        # for the pid to be recorded, so that stop() and close() can find it.
        try:
            pid = await to_thread_to_the_end(
                _run_agent, directory, config_path, ready_w, self.netns
            )
        except asyncio.CancelledError:
            os.close(ready_r)
            raise
        except OSError as exc:
            os.close(ready_r)
            reason = f"cannot run the agent: {exc}"
            raise ProviderError(f"environment {environment_id}: {reason}") from None
        finally:
            os.close(ready_w)
        try:
            line = await self._read_ready(ready_r)
        except TimeoutError:
            line = f"error: not ready within {self._start_timeout:g} s"
        if line == "ready":
            log.info("environment %s: agent %d ready", environment_id, pid)
            return
        if self._is_agent(environment_id, pid):
            await self._terminate(environment_id, pid)
        if not line:
            line = "the agent exited before it was ready"
        reason = line.removeprefix("error: ")
        raise ProviderError(
            f"environment {environment_id}: the agent could not start: {reason}\n"
            f"last lines of its log:\n{self._log_tail(environment_id)}"
        )

    async def _read_ready(self, fd: int) -> str:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            async with asyncio.timeout(self._start_timeout):
                return (await reader.readline()).decode(errors="replace").strip()
        finally:
            transport.close()

    async def _reload(self, environment_id: str, config: AgentConfig) -> None:
        directory = self._dir(environment_id)
        await self._until_answering(environment_id)
        await asyncio.to_thread(config.write, directory / "agent.json")
        await _ask_agent(
            environment_id,
            config,
            {"op": "reload"},
            within=20.0,
            late="did not confirm the reload in 20 s",
            refused="refused the new config",
        )

    async def _until_answering(self, environment_id: str) -> None:
        """An agent alive but still starting (a start that another process began, then died:
        a fleet replica, a host agent) is waited for until it answers on its control socket,
        up to the start timeout; one that dies meanwhile is left to the caller's question."""
        deadline = time.monotonic() + self._start_timeout
        while not await self._answers(environment_id):
            if await self._live_pid(environment_id) is None or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)  # one step of a poll with a deadline

    async def _terminate(self, environment_id: str, pid: int) -> None:
        """SIGTERM, wait up to the deadline, then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await _wait_gone(pid, self._stop_timeout):
            log.warning("environment %s: agent %d ignored SIGTERM; killing it", environment_id, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await _wait_gone(pid, 5.0)
        (self._dir(environment_id) / "agent.pid").unlink(missing_ok=True)


async def _wait_gone(pid: int, within: float) -> bool:
    """Wait until `pid` has exited: its pidfd becomes readable (the agent is not our child)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    gone: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        async with asyncio.timeout(within):
            await gone
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return True


_DETACH = '"$@" </dev/null >&2 & echo $! >agent.pid.$$ && mv -f agent.pid.$$ agent.pid && echo $!'
"""The agent is started by a shell that exits at once: the agent is then nobody's child in
the fleet (init reaps it), so it outlives the fleet and leaves no zombie or process handle. The
shell records its pid itself (atomically, in the environment's directory), in its own session:
a start cut short by the death of whoever asked for it still leaves an agent that the next
start finds, rather than an orphan holding its address."""


def _run_agent(directory: Path, config_path: Path, ready_w: int, netns: Path | None) -> int:
    argv = [sys.executable, "-m", "leeward.agent", "--config", str(config_path)]
    if netns is not None:  # nsenter enters it and execs the agent: the same pid
        argv = ["nsenter", f"--net={netns}", "--", *argv]
    with open(directory / "agent.log", "ab") as log_file:
        launcher = subprocess.run(
            ["/bin/sh", "-c", _DETACH, "sh", *argv, "--ready-fd", str(ready_w)],
            pass_fds=(ready_w,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,  # the agent's stdout and stderr: a crash's traceback lands here
            cwd=directory,
            start_new_session=True,  # a kill of the fleet's process group does not reach it
            timeout=10,
            check=True,
        )
    return int(launcher.stdout.split()[-1])


async def _ask_agent(
    environment_id: str,
    config: AgentConfig,
    message: dict[str, object],
    *,
    within: float,
    late: str,
    refused: str,
) -> dict[str, object]:
    """One request on the agent's control socket; its failures as ProviderErrors that say
    which environment and what happened ("the agent {late}", "the agent {refused}: why")."""
    try:
        async with asyncio.timeout(within):
            answer = await control.request(config.control_socket, message)
    except TimeoutError:
        raise ProviderError(f"environment {environment_id}: the agent {late}") from None
    except control.ControlError as exc:
        raise ProviderError(f"environment {environment_id}: {exc}") from None
    if answer.get("ok") is not True:
        raise ProviderError(
            f"environment {environment_id}: the agent {refused}: "
            f"{answer.get('error', 'no reason given')}"
        )
    return answer


def _prepare(directory: Path, config: AgentConfig, config_path: Path, runtime_dir: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "home").mkdir(mode=0o755, exist_ok=True)
    control.private_dir(runtime_dir)
    config.write(config_path)


def _remove(directory: Path, socket: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise ProviderError(f"could not remove {directory.name}'s disk completely")
    socket.unlink(missing_ok=True)


def _support(setting: Sandboxes) -> sandboxes.Support:
    """Whether environments get sandboxes: "on" requires them (and says why not), "off" never
    (one user only), "auto" where the machine can."""
    if setting == "off":
        return sandboxes.Support(False, "sandboxes are off in the fleet's config", Cgroups.detect())
    support = sandboxes.probe()
    if setting == "on" and not support.ok:
        raise ProviderError(f'sandboxes are required (sandboxes = "on") but {support.reason}')
    return support
