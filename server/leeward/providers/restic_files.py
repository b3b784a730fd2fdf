"""The file work under `leeward.providers.restic`: a restore's staging, ownership, holes and
the move into place, and the commands that write restored paths as the environment's owner."""

from __future__ import annotations

import ctypes
import logging
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leeward.providers.restic_run import (
    DEATH_SIGNAL,
    Outcome,
    Repo,
    piped,
    said,
    spawn,
    unix_mode,
    utc,
)

log = logging.getLogger("leeward.providers.restic")

SPARSE_MIN = 1 << 20
"""Restored files this large are sampled for zeros (restic 0.14 writes holes out in full)."""
_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_FRACTION = re.compile(r"T[0-9:]+\.([0-9]+)")


def memory_file(text: str) -> int:
    """A descriptor of an anonymous file in memory holding `text`, for a child to open as
    `/dev/fd/N`: nothing on disk to clean up, even after a kill -9."""
    fd = os.memfd_create("leeward-restic", os.MFD_CLOEXEC)
    os.write(fd, text.encode())  # (a memory file takes it all at once)
    return fd


def make_parents(path: Path) -> None:
    """`mkdir -p` with mode 0700 for every directory it makes."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def fresh_directory(path: Path) -> None:
    """An empty directory at `path` that only root may enter (a leftover is removed first)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700)


def rename_new(source: Path, target: Path) -> None:
    """rename(2), except that an existing `target` is an error (FileExistsError): plain rename
    silently replaces an empty directory."""
    fs = os.fsencode
    if _libc.renameat2(_AT_FDCWD, fs(source), _AT_FDCWD, fs(target), _RENAME_NOREPLACE) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), str(target))


def settle(root: Path, uid: int | None, gid: int | None) -> tuple[int, int, list[str]]:
    """Give every node under `root` (links themselves, never followed) to `uid`:`gid`; count
    regular files and their bytes; and name the large files that are mostly zeros."""
    files = size = 0
    holes: list[str] = []

    def own(path: str, status: os.stat_result) -> None:
        if uid is None and gid is None:
            return
        os.lchown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        if stat.S_ISREG(status.st_mode) and status.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(status.st_mode))  # chown cleared them: as they were

    def fail(error: OSError) -> None:
        raise error

    own(str(root), os.lstat(root))
    for top, directories, names in os.walk(root, onerror=fail, followlinks=False):
        for name in (*directories, *names):
            path = os.path.join(top, name)
            status = os.lstat(path)
            own(path, status)
            if stat.S_ISREG(status.st_mode):
                files += 1
                size += status.st_size
                if status.st_size >= SPARSE_MIN and _mostly_zeros(path, status.st_size):
                    holes.append(path)
    return files, size, holes


async def dig_holes(path: str) -> None:
    """Give a file of zeros its holes back, keeping its times. Best effort: a file system
    without hole punching keeps the file as it is."""
    status = os.lstat(path)
    outcome = await spawn(["fallocate", "--dig-holes", path])
    if outcome.code != 0:
        log.warning("%s: fallocate --dig-holes: %s", path, said(outcome))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns), follow_symlinks=False)


async def write(
    repository: Repo,
    snapshot: str,
    node: dict[str, Any],
    where: str,
    target: str,
    link: str | None,
    inside: Callable[[list[str]], list[str]],
) -> tuple[Outcome, Outcome]:
    """Write `node` (at `where` in `snapshot`) at `target` with `inside(writer)`: a file's
    bytes or a directory's tar stream from `restic dump`, a link or a pipe from nothing. How
    restic (if it ran) and the writer ended."""
    argv = inside(writer(node, target, link, depth=where.count("/")))
    if node["type"] in ("symlink", "fifo"):
        return Outcome(), await spawn([*DEATH_SIGNAL, *argv])
    archive = ["--archive=tar"] if node["type"] == "dir" else []
    return await piped(repository, ["dump", *archive, "--", snapshot, where], argv)


def writer(node: dict[str, Any], target: str, link: str | None, *, depth: int = 0) -> list[str]:
    """The shell command that writes `node` (from `restic dump` on its stdin) at `target`,
    with its mode and modification time, as whoever runs it. restic 0.14's tar stream of a
    directory holds `home/PATH/...` without `home/PATH/` itself: `depth` components go."""
    scripts = {
        "file": 'mkdir -p -- "$4" && cat > "$1" && chmod -- "$2" "$1" && touch -m -d "$3" -- "$1"',
        "dir": 'mkdir -p -- "$1" && tar -x -f - -p --no-same-owner --strip-components="$5"'
        ' -C "$1" && chmod -- "$2" "$1" && touch -m -d "$3" -- "$1"',
        "symlink": 'mkdir -p -- "$4" && ln -s -- "$5" "$1" && touch -h -m -d "$3" -- "$1"',
        "fifo": 'mkdir -p -- "$4" && mkfifo -m "$2" -- "$1" && touch -m -d "$3" -- "$1"',
    }
    when = _touch_time(str(node["mtime"]))
    mode = f"{unix_mode(int(node['mode'])):o}"
    extra = link if node["type"] == "symlink" else str(depth)
    script = scripts[str(node["type"])]
    return ["sh", "-c", script, "sh", target, mode, when, posixpath.dirname(target), str(extra)]


def _touch_time(text: str) -> str:
    """restic's RFC 3339 time as `touch -d` takes it to the nanosecond (Python's datetime
    keeps microseconds only)."""
    seconds = int(utc(text).replace(microsecond=0).timestamp())
    fraction = _FRACTION.search(text)
    return f"@{seconds}.{(fraction.group(1) if fraction else '').ljust(9, '0')[:9]}"


def _mostly_zeros(path: str, size: int, samples: int = 16, length: int = 1 << 16) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        offsets = [i * (size - length) // (samples - 1) for i in range(samples)]
        zeros = sum(not os.pread(fd, length, offset).strip(b"\0") for offset in offsets)
    finally:
        os.close(fd)
    return zeros * 2 >= samples
