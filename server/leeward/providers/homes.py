"""A local environment's home backed up and restored: the local provider's side (and so a host
agent's) of the backup orders, run with restic (leeward.providers.restic) where the home is.

The host keeps no key: each order brings its repository's, for that run only. restic's cache
for each repository stays on the host (`cache_root/REPOSITORY`), which is what makes the next
backup of the same home fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from leeward.providers import restic
from leeward.providers.base import ProviderError
from leeward.sandbox import sandbox as sandboxes
from leeward.sandbox.owners import OwnerError, host_uid
from leeward_protocol.host import (
    BackupOrder,
    BackupProgress,
    BackupRepository,
    BackupResult,
    RestoreOrder,
    RestorePathsOrder,
    RestoreResult,
)

log = logging.getLogger(__name__)

RESTORED = ".leeward-restore"
"""Where paths restored into a running home go: `~/.leeward-restore/FOLDER/PATH`."""


def repository(wire: BackupRepository, cache_root: Path) -> restic.Repository:
    return restic.Repository(wire.location, wire.password, cache_root / wire.id)


async def backup(
    directory: Path,
    order: BackupOrder,
    cache_root: Path,
    on_progress: Callable[[BackupProgress], None] | None = None,
) -> BackupResult:
    home = directory / "home"
    if not home.is_dir():
        raise ProviderError(f"environment {directory.name} has no home on this host")

    def progress(p: restic.Progress) -> None:
        if on_progress is not None:
            on_progress(
                BackupProgress(
                    percent=p.percent,
                    files_done=p.files_done,
                    bytes_done=p.bytes_done,
                    total_files=p.total_files,
                    total_bytes=p.total_bytes,
                )
            )

    repo = repository(order.repository, cache_root)
    await restic.init(repo, check_key=False)
    summary = await restic.backup(
        repo,
        home,
        host=order.host,
        tags=order.tags,
        excludes=order.excludes,
        parent=order.parent,
        on_progress=progress,
    )
    return BackupResult(
        snapshot=summary.snapshot,
        files_new=summary.files_new,
        files_changed=summary.files_changed,
        files_unmodified=summary.files_unmodified,
        total_files=summary.total_files,
        total_bytes=summary.total_bytes,
        data_added=summary.data_added,
        seconds=summary.seconds,
        warnings=summary.warnings,
    )


async def restore(
    directory: Path, order: RestoreOrder, cache_root: Path, owners: Path, sandboxed: bool
) -> RestoreResult:
    """The home made from the order's snapshot before the environment first starts. A home
    already there is one an earlier try restored completely (restic.restore renames it into
    place only once whole): kept."""
    home = directory / "home"
    if home.exists():
        return RestoreResult(files=0, bytes=0, seconds=0.0)
    await asyncio.to_thread(directory.mkdir, mode=0o700, parents=True, exist_ok=True)
    uid = await _uid(owners, order.owner) if sandboxed else None
    summary = await restic.restore(
        repository(order.repository, cache_root), order.snapshot, home, uid=uid, gid=uid
    )
    return RestoreResult(files=summary.files, bytes=summary.bytes, seconds=summary.seconds)


async def restore_paths(
    directory: Path, order: RestorePathsOrder, cache_root: Path, owners: Path, sandboxed: bool
) -> RestoreResult:
    """Paths of a snapshot written into the running home under `~/RESTORED/FOLDER/`, by a
    process of the owner's inside the environment (so the owner's own links in the home lead
    only where the owner could go anyway)."""
    home = directory / "home"
    if not home.is_dir():
        raise ProviderError(f"environment {directory.name} has no home on this host")
    inside: Callable[[list[str]], list[str]]
    if sandboxed:
        running = await asyncio.to_thread(_sandbox_of, directory, order.owner)
        if running is None:
            raise ProviderError(
                f"environment {directory.name} is not running here: start it, then restore"
            )
        inside = running.command
        destination = f"/home/{running.owner}/{RESTORED}/{order.folder}"
    else:

        def inside(argv: list[str]) -> list[str]:
            return argv

        destination = str(home / RESTORED / order.folder)
    summary = await restic.restore_paths(
        repository(order.repository, cache_root),
        order.snapshot,
        list(order.paths),
        destination=destination,
        inside=inside,
    )
    return RestoreResult(
        files=summary.files,
        bytes=summary.bytes,
        seconds=summary.seconds,
        destination=f"{RESTORED}/{order.folder}",
    )


async def _uid(owners: Path, owner: str | None) -> int | None:
    if owner is None:
        return None
    try:
        return await asyncio.to_thread(host_uid, owners, owner)
    except OwnerError as exc:
        raise ProviderError(str(exc)) from None


def _sandbox_of(directory: Path, owner: str | None) -> sandboxes.Running | None:
    """The environment's sandbox, if it runs and is the owner's."""
    running = sandboxes.recorded(directory)
    return running if running is not None and owner in (None, running.owner) else None


def cache_root_of(data_dir: Path) -> Path:
    """restic's caches, one per repository, beside the environments' directory."""
    root = data_dir.parent / "restic-cache"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root
