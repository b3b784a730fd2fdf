"""Files in the home, as the profile sync reads and writes them: content hashes, atomic writes
that never leave the home, conflict copies, and whether a path is under the tracked ones."""

from __future__ import annotations

import contextlib
import hashlib
import re
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from leeward.common.files import write_atomic
from leeward.common.profilefiles import CONFLICT_MARK
from leeward_protocol.fleet import SyncConflict

_UNREADABLE = "<not a regular file>"
"""What a path that is not a regular file hashes to: never equal to a profile's content."""


class UnsafePath(Exception):
    """A profile path that cannot be written without leaving the home (a symlinked directory on
    the way, a file where a directory should be)."""


def local_sha(home: Path, path: str) -> str | None:
    """The sha256 of the regular file at `path`; None when nothing is there; `_UNREADABLE` for
    anything else (a directory, a symlink, a device)."""
    full = home / path
    try:
        info = full.lstat()
    except FileNotFoundError:
        return None
    except OSError:
        return _UNREADABLE
    if not stat.S_ISREG(info.st_mode):
        return _UNREADABLE
    digest = hashlib.sha256()
    try:
        with open(full, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return _UNREADABLE
    return digest.hexdigest()


def _parent_inside(home: Path, path: str) -> Path:
    """The directory that holds `path`, created as needed, every step a real directory."""
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or path.startswith("/"):
        raise UnsafePath(f"{path!r} is not a path inside the home")
    directory = home
    for part in parts[:-1]:
        directory = directory / part
        try:
            info = directory.lstat()
        except FileNotFoundError:
            directory.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePath(f"{directory.relative_to(home)} is not a directory here")
    return directory


def write_file(home: Path, path: str, data: bytes, mode: int, modified_at: datetime) -> None:
    """Replace `path` atomically with `data` (a symlink there is replaced, not followed)."""
    directory = _parent_inside(home, path)
    name = path.rsplit("/", 1)[-1]
    target = directory / name
    if target.is_dir() and not target.is_symlink():
        raise UnsafePath(f"{path} is a directory here")
    write_atomic(target, data, mode=mode, modified_at=modified_at.timestamp(), durable=False)


def conflict_copy(home: Path, path: str, data: bytes, source: str, at: datetime) -> str:
    """Write `data` next to `path` as `PATH.leeward-conflict-<source>-<time>`; its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", source).strip("-") or "elsewhere"
    base = f"{path}{CONFLICT_MARK}{safe}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    copy, n = base, 1
    while (home / copy).exists() or (home / copy).is_symlink():
        n += 1
        copy = f"{base}-{n}"
    write_file(home, copy, data, 0o600, at)
    return copy


def keep_theirs(
    home: Path, path: str, data: bytes, source: str, version: int, at: datetime
) -> SyncConflict:
    """Another environment's version of `path` (ours stays in place), written next to it as a
    conflict copy; the record of that conflict for the sync status."""
    copy = conflict_copy(home, path, data, source, at)
    return SyncConflict(path=path, copy_path=copy, other_environment=source, version=version, at=at)


def remove_file(home: Path, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISREG((home / path).lstat().st_mode):
            (home / path).unlink()


def under(path: str, tracked: Iterable[str]) -> bool:
    return any(path == t or path.startswith(t + "/") for t in tracked)
