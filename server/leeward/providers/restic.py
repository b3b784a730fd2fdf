"""Backups of an environment's home with restic: the engine the providers run where the home is.

restic does the hard parts (content-defined chunks, deduplication across snapshots, encryption,
`check`, `forget`/`prune`); this module only runs it, reads its JSON, and keeps the promises
around it: a key never on a command line, a stale lock from a killed run cleared before the next
one, a restore that is either complete and in place or not there at all, and restored files that
belong to the environment's owner on this host.

Each snapshot holds one directory, `home/` (the home is backed up from its parent directory by
its relative name), so that a snapshot taken on one host restores on any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from leeward.providers.base import ProviderError

DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".cache",
    "node_modules",
    "__pycache__",
    ".venv/lib",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".npm/_cacache",
    ".cargo/registry",
    "target/debug",
    "target/release",
    ".gradle/caches",
    ".local/share/Trash",
    ".leeward-restore-*",
)
"""What no backup carries unless the fleet's operator says otherwise: caches and build outputs
(restic patterns, matched as a name anywhere under the home, or a path relative to it)."""


class ResticError(ProviderError):
    """restic failed; the message says what it was doing, what restic said, and what to do."""


@dataclass(frozen=True)
class Repository:
    location: str
    """restic's `--repo`: a directory, or any backend restic speaks (`sftp:`, `s3:`, `rest:`)."""
    password: str
    """Its key. Given to restic through a pipe or the environment, never on a command line."""
    cache_dir: Path | None = None
    """restic's cache for it (on the host); None: restic runs with `--no-cache`."""


@dataclass(frozen=True)
class Progress:
    percent: float
    """0.0 to 1.0."""
    files_done: int
    bytes_done: int
    total_files: int
    total_bytes: int


@dataclass(frozen=True)
class BackupSummary:
    snapshot: str
    """The snapshot's full id."""
    files_new: int
    files_changed: int
    files_unmodified: int
    total_files: int
    total_bytes: int
    """The size of what was backed up (the home minus exclusions)."""
    data_added: int
    """Bytes written to the repository: what was new."""
    seconds: float
    warnings: list[str] = field(default_factory=list)
    """What could not be read (a file that vanished, one without permission): the snapshot
    exists without them."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    tags: list[str]
    host: str


@dataclass(frozen=True)
class Entry:
    """A file, directory, link or other node in a snapshot, its path relative to the home."""

    path: str
    type: str
    """"file", "dir", "symlink", "fifo", "dev", "chardev", "socket"."""
    size: int
    mode: int
    mtime: datetime
    target: str | None = None
    """A symbolic link's target, as stored (never followed)."""


@dataclass(frozen=True)
class RestoreSummary:
    files: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Retention:
    last: int = 3
    hourly: int = 24
    daily: int = 7
    weekly: int = 4


async def init(repository: Repository) -> None:
    """Create the repository unless it exists; an existing one must open with this key."""
    raise NotImplementedError


async def backup(
    repository: Repository,
    home: Path,
    *,
    host: str,
    tags: list[str],
    excludes: list[str],
    parent: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> BackupSummary:
    """Back up `home` as a new snapshot (`home/` inside it)."""
    raise NotImplementedError


async def snapshots(repository: Repository) -> list[Snapshot]:
    """Every snapshot in the repository, oldest first."""
    raise NotImplementedError


async def entries(repository: Repository, snapshot: str, path: str = "") -> list[Entry]:
    """What a snapshot holds at `path` (relative to the home; "" is the home): one level."""
    raise NotImplementedError


async def restore(
    repository: Repository,
    snapshot: str,
    home: Path,
    *,
    uid: int | None,
    gid: int | None,
    paths: list[str] | None = None,
) -> RestoreSummary:
    """Restore a snapshot's home to `home`, which must not exist yet."""
    raise NotImplementedError


async def restore_paths(
    repository: Repository,
    snapshot: str,
    paths: list[str],
    *,
    destination: str,
    inside: Callable[[list[str]], list[str]],
) -> RestoreSummary:
    """Restore some paths of a snapshot (relative to the home) into `destination`, a directory
    as the environment sees it (`/home/alice/.leeward-restore/SHORTID`), each at its relative
    path under it. What writes them runs as the environment's owner, inside it: `inside(argv)`
    is `argv` as the owner runs it there (the sandbox's join; the identity without sandboxes),
    so a link the owner planted in the home leads only where the owner could go anyway."""
    raise NotImplementedError


async def forget(repository: Repository, retention: Retention, *, prune: bool) -> list[str]:
    """Forget snapshots that `retention` does not keep (and prune their data); returns the ids
    forgotten."""
    raise NotImplementedError


async def check(repository: Repository) -> None:
    """Raise ResticError unless `restic check` finds the repository sound."""
    raise NotImplementedError
