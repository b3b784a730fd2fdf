"""Whether a process is alive, by its pid (a session's proxy, the embedded fleet), and whether it
is the one listening on a port."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (exited, its parent has not reaped it yet) is not alive;
    a process of another user is (it exists, we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal said it exists


def runs_with(pid: int, argument: Path) -> bool:
    """Alive and, where /proc tells, started with `argument` on its command line (its config
    file): ours, not a process that reused the pid."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return str(argument).encode() in argv


TCP_LISTEN = "0A"
"""The `st` of a listening socket in /proc/net/tcp (the kernel's TCP_LISTEN, in hex)."""


def listens_on(pid: int, port: int) -> bool | None:
    """Whether `pid` holds a listening TCP socket on `port` (any address): a process that
    answers at a port is not necessarily the one we started. None where that cannot be told
    (no /proc: macOS; or the process's descriptors are not ours to read)."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):  # no IPv6
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except (OSError, IndexError, ValueError):
        return None
    for descriptor in descriptors:
        with contextlib.suppress(OSError):  # closed while we looked
            if os.readlink(descriptor) in inodes:
                return True
    return False
