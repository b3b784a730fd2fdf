"""Each owner's host uid, and file work done as that uid.

Everything an environment's processes create on the host belongs to its owner's own uid, never
root's, so that what leaves a sandbox (a file in the home, a process seen from the host) cannot
act as root or as another owner. The host allocates one uid per owner, once, in a small registry
file (uids are never reused: a reused uid would own a former owner's leftovers).

The agent runs as root but touches an owner's home only as the owner: file work on the home goes
to threads whose filesystem uid and gid are the owner's (`setfsuid`, which is per thread), so a
symbolic link the owner planted leads only where the owner could go anyway, and what the agent
writes is the owner's.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import json
import os
import pwd
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leeward.common.files import write_atomic

UID_BASE = 2_000_000
"""Owners' uids start here: far above the machine's own users and the usual subordinate ranges
(/etc/subuid hands out 100000 and up in steps of 65536 for a few dozen users)."""
UID_COUNT = 1_000_000

_OWNER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class OwnerError(Exception):
    """The owner's uid cannot be given; the message says why."""


def check_name(owner: str) -> str:
    """An owner name usable as a Unix user name and as `/home/OWNER`."""
    if not _OWNER_RE.match(owner):
        raise OwnerError(
            f"owner {owner!r} cannot be a Unix user name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32)"
        )
    return owner


def host_uid(registry: Path, owner: str, *, base: int = UID_BASE) -> int:
    """The owner's host uid, allocated on first use. Safe across processes (a lock file)."""
    check_name(owner)
    registry.parent.mkdir(parents=True, exist_ok=True)
    with open(registry.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known: dict[str, int] = json.loads(registry.read_text())
        except FileNotFoundError:
            known = {}
        except (OSError, ValueError) as exc:
            raise OwnerError(f"{registry}: cannot read the owners' uids: {exc}") from None
        if owner in known:
            return known[owner]
        taken = set(known.values())
        uid = max(taken, default=base - 1) + 1
        while uid in taken or _exists(uid):
            uid += 1
        if uid >= base + UID_COUNT:
            raise OwnerError(f"{registry}: no host uid left for {owner}")
        known[owner] = uid
        write_atomic(registry, json.dumps(known, indent=1, sort_keys=True), mode=0o600)
        return uid


def _exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


_libc = ctypes.CDLL(None, use_errno=True)
"""The C library this process already has (no `find_library`, which runs ldconfig)."""


PRELOADED = ("tempfile", "encodings.idna", "encodings.utf_8")
"""Modules the owner's threads may import lazily: imported before they stop being root, since the
owner may not read the Python installation (under /root, say)."""


def _set_fs_ids(uid: int, gid: int) -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    # setfsuid/setfsgid change the calling thread only (glibc does not broadcast them), and
    # report the previous value rather than an error: check that they took.
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    if _libc.setfsuid(-1) != uid or _libc.setfsgid(-1) != gid:
        raise OwnerError(f"cannot act as uid {uid} (setfsuid refused: not root?)")


def as_owner_executor(uid: int, gid: int, *, workers: int = 4) -> ThreadPoolExecutor:
    """Threads that act on files as `uid`:`gid`: the agent's file work on an owner's home (the
    profile sync, setup files and logs) runs in them. Only that: anything else (asyncssh's and
    aiohttp's own threads) stays in the default executor, as root, which may read what it needs."""
    return ThreadPoolExecutor(
        max_workers=workers,
        thread_name_prefix=f"as-{uid}",
        initializer=_set_fs_ids,
        initargs=(uid, gid),
    )


VIEW = Path("/run/leeward-agent")
"""Where an agent sees its environment's home, in a mount namespace of its own."""
_CLONE_NEWNS = 0x00020000


def home_view(home: Path) -> Path:
    """`home`, bound where the owner's threads can reach it without the right to walk the host's
    path to it (the fleet's state directory stays closed to them): `VIEW/home`, in a mount
    namespace private to this process. Call it before the process starts any thread (a process
    with threads cannot have a mount namespace of its own)."""
    if threading.active_count() > 1:
        raise OwnerError("home_view() must run before any thread starts")
    VIEW.mkdir(mode=0o755, exist_ok=True)  # on the host: an empty directory to mount over
    if _libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OwnerError(f"cannot make a mount namespace: {os.strerror(err)}")
    view = VIEW / "home"
    for argv in (
        ["mount", "--make-rprivate", "/"],  # nothing of ours reaches the host's mounts
        ["mount", "-t", "tmpfs", "-o", "mode=0755,size=16k", "leeward-agent", str(VIEW)],
        ["mkdir", str(view)],
        ["mount", "--bind", str(home), str(view)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OwnerError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return view
