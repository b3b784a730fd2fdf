"""Resource limits for a sandbox: CPU, memory and processes, through cgroup v2 or v1.

The host makes one group per environment (`leeward/<environment id>` under each controller on
v1, one group on v2) and writes the limits; the sandbox's first process and every process that
joins it later write themselves into the group's `cgroup.procs` before they run anything (a
process does not inherit the group of the sandbox it enters). What the kernel cannot limit here
is said once, when the host starts (`Cgroups.unenforced`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("leeward.sandbox.cgroups")

ROOT = Path("/sys/fs/cgroup")
PARENT = "leeward"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    cpus: float | None = None
    """CPU time, in CPUs (1.5: one and a half CPUs' worth per period)."""
    memory_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class Cgroups:
    """Where this machine lets the host limit resources."""

    version: int | None
    """2, 1, or None when neither is writable (not root, no cgroupfs)."""
    root: Path = ROOT
    controllers: dict[str, Path] = field(default_factory=dict)
    """v1: controller name ("cpu", "memory", "pids") → its hierarchy's mount; v2: → root."""

    @classmethod
    def detect(cls, root: Path = ROOT) -> Cgroups:
        if os.geteuid() != 0:
            return cls(None, root)
        if (root / "cgroup.controllers").is_file():
            available = set((root / "cgroup.controllers").read_text().split())
            subtree = root / "cgroup.subtree_control"
            enabled = set(subtree.read_text().split()) if subtree.is_file() else set()
            for name in ("cpu", "memory", "pids"):
                if name in available and name not in enabled:
                    with contextlib.suppress(OSError):
                        subtree.write_text(f"+{name}")
                        enabled.add(name)
            return cls(2, root, {n: root for n in ("cpu", "memory", "pids") if n in enabled})
        found: dict[str, Path] = {}
        for name in ("cpu", "memory", "pids"):
            for candidate in (root / name, root / f"{name},cpuacct", root / "cpu,cpuacct"):
                if (candidate / "cgroup.procs").is_file() and os.access(candidate, os.W_OK):
                    found[name] = candidate
                    break
        return cls(1 if found else None, root, found)

    @property
    def unenforced(self) -> list[str]:
        """The limits this machine cannot enforce: "cpu", "memory", "pids"."""
        return [n for n in ("cpu", "memory", "pids") if n not in self.controllers]

    def _groups(self, environment_id: str) -> dict[str, Path]:
        return {n: base / PARENT / environment_id for n, base in self.controllers.items()}

    def create(self, environment_id: str, limits: Limits) -> list[Path]:
        """The environment's groups with `limits` written; the `cgroup.procs` files a process
        writes its pid into to be limited. Idempotent: the limits are rewritten."""
        procs: list[Path] = []
        for name, group in self._groups(environment_id).items():
            if self.version == 2:
                # v2: one group; every controller's files are in it, enabled by the parent.
                parent = group.parent
                parent.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text(f"+{name}")
            group.mkdir(parents=True, exist_ok=True)
            self._write(name, group, limits)
            if group / "cgroup.procs" not in procs:
                procs.append(group / "cgroup.procs")
        return procs

    def _write(self, name: str, group: Path, limits: Limits) -> None:
        v2 = self.version == 2
        if name == "cpu" and limits.cpus is not None:
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            if v2:
                (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
        if name == "memory" and limits.memory_bytes is not None:
            if v2:
                (group / "memory.max").write_text(str(limits.memory_bytes))
            else:
                (group / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        if name == "pids" and limits.pids is not None:
            (group / "pids.max").write_text(str(limits.pids))

    def procs(self, environment_id: str) -> list[Path]:
        """The `cgroup.procs` files of an environment's existing groups."""
        found = []
        for group in self._groups(environment_id).values():
            path = group / "cgroup.procs"
            if path.is_file() and path not in found:
                found.append(path)
        return found

    def remove(self, environment_id: str) -> None:
        """Remove the groups (each must be empty: the sandbox was stopped). Idempotent; a group
        still busy stays (the next stop removes it)."""
        for group in self._groups(environment_id).values():
            with contextlib.suppress(OSError):
                group.rmdir()

    def read(self, environment_id: str) -> dict[str, str]:
        """The limits in force, as the kernel holds them (for `status` and the tests)."""
        files = {
            2: {"cpu": "cpu.max", "memory": "memory.max", "pids": "pids.max"},
            1: {"cpu": "cpu.cfs_quota_us", "memory": "memory.limit_in_bytes", "pids": "pids.max"},
        }.get(self.version or 0, {})
        result = {}
        for name, group in self._groups(environment_id).items():
            with contextlib.suppress(OSError):
                result[name] = (group / files[name]).read_text().strip()
        return result


JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
"""`sh -c JOIN_CGROUPS sh PROCS... -- ARGV...`: the shell writes its pid into each group, then
becomes ARGV, so ARGV and all it starts are limited from their first instruction."""


def joining(procs: list[Path], argv: list[str]) -> list[str]:
    """`argv`, run inside the groups whose `cgroup.procs` files are `procs`."""
    if not procs:
        return argv
    return ["/bin/sh", "-c", JOIN_CGROUPS, "sh", *map(str, procs), "--", *argv]
