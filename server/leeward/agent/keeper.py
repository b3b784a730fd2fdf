"""The agent's side of its environment's sandbox: where sessions run, for whom.

While the environment has an owner and the host gives sandboxes (`AgentConfig.sandbox`), the
keeper finds the environment's sandbox (one started before this agent, which an agent restart or
a live migration leaves running) or starts it, starts it again if it died (its processes are then
gone: it says so), and gives the agent threads that act on files as the owner's uid (`files`,
leeward.sandbox.owners), which reach the home through the agent's view of it
(`owners.home_view`), not the host's path.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leeward.agent.config import AgentConfig
from leeward.agent.place import Direct, Place, Sandboxed
from leeward.sandbox import sandbox
from leeward.sandbox.cgroups import Cgroups, Limits
from leeward.sandbox.owners import as_owner_executor

log = logging.getLogger("leeward.agent.keeper")


class Keeper:
    def __init__(self, state_dir: Path, config: AgentConfig, view: Path | None = None) -> None:
        self._state_dir = state_dir
        self._config = config
        self._view = view
        """The home where the owner's threads reach it (None: no sandbox)."""
        self._cgroups: Cgroups | None = None
        self._spec: sandbox.SandboxSpec | None = None
        self._running: sandbox.Running | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._place: Place = Direct.for_current_user(config.home)

    def enter(self, config: AgentConfig) -> Place:
        """The place for `config`: its sandbox (found or started) when it has an owner and
        sandboxes are on; the host otherwise. Raises `sandbox.SandboxError`."""
        self._config = config
        box = config.sandbox
        if box is None or config.owner is None or box.uid is None:
            self._leave()
            self._place = Direct.for_current_user(config.home)
            return self._place
        if self._view is None:
            raise sandbox.SandboxError("the agent has no view of the home (owners.home_view)")
        if self._cgroups is None:
            self._cgroups = Cgroups.detect()
        spec = sandbox.SandboxSpec(
            environment_id=config.environment_id,
            hostname=config.name,
            rootfs=box.rootfs,
            home=config.home,
            owner=config.owner,
            uid=box.uid,
            state_dir=self._state_dir,
            limits=Limits(cpus=box.cpus, memory_bytes=box.memory_bytes, pids=box.pids),
            own_network=box.own_network,
            egress=box.egress,
        )
        same_owner = self._spec is not None and (self._spec.owner, self._spec.uid) == (
            spec.owner,
            spec.uid,
        )
        if self._running is None or not same_owner or not self._running.alive():
            # A new image (rootfs) reaches the sandbox the next time it starts, never a running one.
            self._running = sandbox.ensure(spec, self._cgroups)
        if not same_owner:
            self._own(spec.uid)
        self._spec = spec
        self._place = Sandboxed(self._running, self._view, spec.owner)
        return self._place

    def current(self) -> Place:
        """The place for a new session: a sandbox that died (its PID 1 killed from inside) is
        started again, empty."""
        if self._running is not None and not self._running.alive():
            log.warning("the sandbox is gone (everything in it stopped); starting it again")
            self._running = None
            try:
                return self.enter(self._config)
            except sandbox.SandboxError as exc:
                log.error("cannot start the sandbox again: %s", exc)
        return self._place

    def status(self) -> dict[str, object] | None:
        if self._running is None or self._config.sandbox is None:
            return None
        return {
            "pid": self._running.pid,
            "uid": self._running.uid,
            "image": self._config.sandbox.image,
            "alive": self._running.alive(),
            "limits": self._cgroups.read(self._config.environment_id) if self._cgroups else {},
        }

    def _own(self, uid: int) -> None:
        """From now on the agent's file work on the home is done as the owner."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._executor = as_owner_executor(uid, uid)

    @property
    def files(self) -> ThreadPoolExecutor | None:
        """Where the agent's file work on the home runs: the owner's threads; None (the default
        executor) without a sandbox."""
        return self._executor

    def _leave(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self._running = None
        self._spec = None
