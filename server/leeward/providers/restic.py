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

import asyncio
import json
import os
import posixpath
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from leeward.common.threads import to_thread_to_the_end
from leeward.providers import restic_files as disk
from leeward.providers import restic_run as run
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
(restic patterns relative to the home: a name, or names joined by `/`, matched at any depth
under it; one starting with `/` only at its top)."""


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


async def init(repository: Repository, *, check_key: bool = True) -> None:
    """Create the repository unless it exists; an existing one must open with this key.
    `check_key=False`: a local repository that is there is taken as it is (opening it costs
    restic over half a second of key derivation; the command that follows says as well that
    the key does not open it)."""
    local = run.local_path(repository.location)
    exists = None if local is None else await asyncio.to_thread((local / "config").exists)
    if exists and not check_key:
        return
    if exists is not False:  # there, or perhaps there (another backend): does the key open it?
        outcome = await _restic(repository, ["cat", "config"])
        if outcome.code == 0:
            return
        if exists or not run.said_in(outcome, run.NO_REPOSITORY):
            raise _failure(f"opening the repository {repository.location}", outcome)
    if local is not None:
        await asyncio.to_thread(disk.make_parents, local.parent)
    outcome = await _restic(repository, ["init"])
    if outcome.code != 0:
        raise _failure(f"creating the repository {repository.location}", outcome)


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
    """Back up `home` as a new snapshot (`home/` inside it).

    restic runs from the home's parent with the relative name `home` (a home's directory is
    named so), so the snapshot's tree is `/home/...` whatever the home's path on this host.
    Links are stored, never followed, and other file systems mounted under the home are left
    out (`--one-file-system`). `excludes` come after DEFAULT_EXCLUDES, relative to the home
    (see `run.exclude_line`). A `parent` that is not in the repository is dropped: restic then
    picks its own (the latest of this host and path), and an unchanged file is still stored
    once. Files that could not be read do not fail the backup (restic's exit status 3): they
    are in `warnings`."""
    started = time.monotonic()
    doing = f"backing up {home} to {repository.location}"
    if home.name != "home":
        raise ResticError(
            f"{doing}: a home's directory must be named `home` (each snapshot holds"
            " `home/`); back up its parent's `home`"
        )
    if await asyncio.to_thread(home.is_symlink) or not await asyncio.to_thread(home.is_dir):
        raise ResticError(f"{doing}: {home} is not a directory; nothing to back up")
    if any(not tag or "," in tag or "\n" in tag for tag in tags):
        raise ResticError(f"{doing}: tags {tags!r}: restic's tags are not empty, without commas")
    try:
        lines = [run.exclude_line(home, p) for p in (*DEFAULT_EXCLUDES, *excludes)]
    except ValueError as exc:
        raise ResticError(f"{doing}: {exc}") from None
    await _unlock(repository)
    excluded = disk.memory_file("\n".join(lines) + "\n")  # (no file left by a kill -9)
    args = ["backup", "--json", "--one-file-system", f"--host={host}"]
    args += [f"--tag={tag}" for tag in tags] + [f"--exclude-file=/dev/fd/{excluded}"]
    try:
        parents = [[f"--parent={parent}"], []] if parent and _ID.match(parent) else [[]]
        for choice in parents:
            report = run.BackupReport(home, on_progress and (lambda p: on_progress(Progress(**p))))
            outcome = await _restic(
                repository,
                [*args, *choice, "--", home.name],
                cwd=home.parent,
                pass_fds=(excluded,),
                env={"RESTIC_PROGRESS_FPS": "4"},
                on_line=report.line,
                on_error_line=report.error_line,
            )
            if not (choice and outcome.code == 1 and run.said_in(outcome, "invalid id")):
                break  # (else: the parent is not there; once more without it)
    finally:
        os.close(excluded)
    if outcome.code not in (0, 3) or report.summary is None:
        raise _failure(doing, outcome)
    return BackupSummary(
        snapshot=await _full_id(repository, str(report.summary["snapshot_id"])),
        **run.summary_counts(report.summary),
        seconds=time.monotonic() - started,
        warnings=report.warnings(outcome) if outcome.code == 3 else [],
    )


async def snapshots(repository: Repository) -> list[Snapshot]:
    """Every snapshot in the repository, oldest first."""
    return sorted(await _snapshots(repository, []), key=lambda snapshot: snapshot.time)


async def entries(repository: Repository, snapshot: str, path: str = "") -> list[Entry]:
    """What a snapshot holds at `path` (relative to the home; "" is the home): one level.
    At a path that is not a directory: that one entry."""
    [(_, where)], listing = await _listing(repository, snapshot, [path], recursive=False)
    node = listing.nodes[where]
    nodes = listing.children if node["type"] == "dir" else [node]
    links = [str(n["path"]) for n in nodes if n.get("type") == "symlink"]
    targets = await _link_targets(repository, snapshot, links) if links else {}
    return [Entry(**run.entry_fields(n), target=targets.get(str(n["path"]))) for n in nodes]


async def restore(
    repository: Repository,
    snapshot: str,
    home: Path,
    *,
    uid: int | None,
    gid: int | None,
    paths: list[str] | None = None,
) -> RestoreSummary:
    """Restore a snapshot's home to `home`, which must not exist yet.

    restic restores into a sibling staging directory (`.NAME.restoring`, closed to all but
    root), the files are given to `uid`:`gid` there, and only then is the whole moved to `home`
    by one rename: until it, `home` does not exist, whatever stopped the restore (a leftover
    staging directory is removed by the next attempt). restic 0.14 writes a sparse file's zeros
    out in full: a large file that its samples show to be mostly zeros gets its holes back
    (`fallocate --dig-holes`, which reads it once more), so that a 2 GiB sparse file does not
    keep taking 2 GiB. `paths` (relative to the home) restores only those."""
    started = time.monotonic()
    doing = f"restoring snapshot {snapshot} to {home}"
    wanted = [_checked(snapshot, p)[1] for p in paths or [""]]
    if await asyncio.to_thread(os.path.lexists, home):
        raise ResticError(f"{doing}: {home} exists already; restore to a path that does not")
    staging = home.parent / f".{home.name}.restoring"
    try:
        await to_thread_to_the_end(disk.fresh_directory, staging)
    except OSError as exc:
        raise ResticError(f"{doing}: cannot make {staging}: {exc.strerror}") from None
    try:
        args = ["restore", "--verify", f"--target={staging}"]
        args += [f"--include={run.escape_pattern(w)}" for w in wanted if paths]
        outcome = await _restic(repository, [*args, "--", snapshot])
        if outcome.code != 0:
            raise _failure(doing, outcome, snapshot=snapshot)
        restored = staging / "home"
        for where in wanted:
            if not await asyncio.to_thread(os.path.lexists, staging / where.lstrip("/")):
                raise ResticError(f"{doing}: no {where[6:] or 'home'} in snapshot {snapshot}")
        files, size, holes = await to_thread_to_the_end(disk.settle, restored, uid, gid)
        for hole in holes:
            await disk.dig_holes(hole)
        try:
            await to_thread_to_the_end(disk.rename_new, restored, home)
        except OSError as exc:
            raise ResticError(f"{doing}: cannot move it in place: {exc.strerror}") from None
    except BaseException:
        await to_thread_to_the_end(shutil.rmtree, staging, True)
        raise
    await to_thread_to_the_end(shutil.rmtree, staging, True)
    return RestoreSummary(files=files, bytes=size, seconds=time.monotonic() - started)


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
    so a link the owner planted in the home leads only where the owner could go anyway.

    restic dumps each path into a shell, `tar` or `cat` inside (so the environment's image has
    them): files, directories, links and pipes, with their modes and modification times. restic
    0.14's tar stream carries a pipe inside a directory as an empty file. A failure stops the
    rest, and what was written stays."""
    started = time.monotonic()
    if not destination.startswith("/"):
        raise ResticError(f"restoring to {destination!r}: the destination must be absolute")
    if not paths:
        return RestoreSummary(files=0, bytes=0, seconds=0.0)
    checked, listing = await _listing(repository, snapshot, paths, recursive=True)
    links = [where for _, where in checked if listing.nodes[where]["type"] == "symlink"]
    targets = await _link_targets(repository, snapshot, links) if links else {}
    for relative, where in checked:
        node = listing.nodes[where]
        target = posixpath.join(destination, relative) if relative else destination
        doing = f"restoring {relative or 'the home'} of snapshot {snapshot} to {target}"
        if node["type"] not in ("file", "dir", "symlink", "fifo"):
            raise ResticError(
                f"{doing}: it is a {node['type']}: only files, directories, links"
                " and pipes can be restored"
            )
        link = targets.get(where)
        source, said = await disk.write(repository, snapshot, node, where, target, link, inside)
        if source.code != 0 and said.code == 0:
            raise _failure(doing, source, snapshot=snapshot)
        if source.code != 0:
            await _unlock(repository)  # restic died of the broken pipe, holding its lock
        if said.code != 0:
            raise ResticError(
                f"{doing}: writing it as the environment's owner failed: {run.said(said)}; "
                "check that the owner may write there"
            )
    files, size = (sum(count[i] for count in listing.counts.values()) for i in (0, 1))
    return RestoreSummary(files=files, bytes=size, seconds=time.monotonic() - started)


async def forget(repository: Repository, retention: Retention, *, prune: bool) -> list[str]:
    """Forget snapshots that `retention` does not keep (and prune their data); returns the ids
    forgotten.

    All of a repository's snapshots are one home's, so they form one group (`--group-by ''`):
    restic's default groups by host and path, and a home that moved to another host would
    keep `last` snapshots per host."""
    kept = (retention.last, retention.hourly, retention.daily, retention.weekly)
    if any(n < 0 for n in kept):
        raise ResticError(f"forgetting snapshots: {retention} has a negative count")
    await _unlock(repository)
    args = ["forget", "--json", "--group-by=", f"--keep-last={retention.last}"]
    args += [f"--keep-hourly={retention.hourly}", f"--keep-daily={retention.daily}"]
    args += [f"--keep-weekly={retention.weekly}", *(["--prune"] if prune else [])]
    outcome = await _restic(repository, args)
    if outcome.code != 0:
        raise _failure(f"forgetting snapshots of {repository.location}", outcome)
    text = outcome.out.lstrip()
    groups = json.JSONDecoder().raw_decode(text)[0] if text else []  # (prune's report after)
    return [str(s["id"]) for group in groups or [] for s in group.get("remove") or []]


async def check(repository: Repository) -> None:
    """Raise ResticError unless `restic check` finds the repository sound."""
    await _unlock(repository)
    outcome = await _restic(repository, ["check"])
    if outcome.code != 0:
        report = [line for line in outcome.out.splitlines() if "error" in line.lower()]
        outcome.err.extend(report[-3:])
        raise _failure(f"checking {repository.location}", outcome)


_ID = re.compile(r"^(latest|[0-9a-f]{8,64})$")
"""A snapshot id as restic takes it (a prefix of at least the short id's 8), or `latest`."""


async def _restic(repository: Repository, args: list[str], **kw: Any) -> run.Outcome:
    """`restic ARGS`, once more after `restic unlock` if a lock of a killed run was in the
    way (restic 0.14 does not ignore stale locks: a killed run's blocks all who lock after)."""
    outcome = await run.run(repository, args, **kw)
    if outcome.code != 0 and run.said_in(outcome, "already locked"):
        await _unlock(repository)
        outcome = await run.run(repository, args, **kw)
    return outcome


async def _unlock(repository: Repository) -> None:
    """Remove stale locks only (those of processes gone on this host, or older than 30 min)."""
    if await asyncio.to_thread(run.local_names, repository, "locks") == []:
        return  # (a local repository without a lock: nothing to unlock)
    outcome = await run.run(repository, ["unlock"])
    if outcome.code != 0:
        raise _failure(f"clearing stale locks of {repository.location}", outcome)


async def _snapshots(repository: Repository, ids: list[str]) -> list[Snapshot]:
    outcome = await _restic(repository, ["snapshots", "--json", "--", *ids])
    if outcome.code != 0:
        raise _failure(f"listing the snapshots of {repository.location}", outcome)
    return [Snapshot(**run.snapshot_fields(s)) for s in json.loads(outcome.out or "[]")]


async def _full_id(repository: Repository, short: str) -> str:
    """restic 0.14's backup summary names the snapshot by its short id (a local repository's
    snapshot files are named by their full ids)."""
    names = await asyncio.to_thread(run.local_names, repository, "snapshots")
    if names is not None and len(full := [n for n in names if n.startswith(short)]) == 1:
        return full[0]
    found = await _snapshots(repository, [short])
    if len(found) != 1:
        raise ResticError(f"backing up: restic made snapshot {short}, which cannot be found")
    return found[0].id


async def _link_targets(repository: Repository, snapshot: str, paths: list[str]) -> dict[str, str]:
    """Links' targets, which restic 0.14's `ls --json` leaves out and `find` shows (each an
    exact pattern: find descends only where one may match)."""
    patterns = [run.escape_pattern(p) for p in paths]
    outcome = await _restic(
        repository, ["find", "--json", f"--snapshot={snapshot}", "--", *patterns]
    )
    if outcome.code != 0:
        raise _failure(f"reading links of snapshot {snapshot}", outcome, snapshot=snapshot)
    return run.link_targets(outcome.out)


def _checked(snapshot: str, path: str) -> tuple[str, str]:
    """`path` normalized, and where it is in a snapshot (`/home/PATH`); refuses a malformed
    snapshot id and a path that is absolute, climbs out with `..`, or has a NUL."""
    if not _ID.match(snapshot):
        raise ResticError(f"no snapshot {snapshot!r} in this environment's backups")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/") or ".." in parts or "\0" in path:
        raise ResticError(f"{path!r}: a path in a backup is relative to the home, without `..`")
    return "/".join(parts), "/".join(["", "home", *parts])


async def _listing(
    repository: Repository, snapshot: str, paths: list[str], *, recursive: bool
) -> tuple[list[tuple[str, str]], run.Listing]:
    """`restic ls` at `paths`: each normalized with where it is in the snapshot, and what was
    listed there (each one's node, and its children or the count of what is under it)."""
    checked = [_checked(snapshot, path) for path in paths]
    listing = run.Listing([where for _, where in checked], recursive=recursive)
    args = ["ls", "--json", *(["--recursive"] if recursive else []), "--", snapshot]
    outcome = await _restic(repository, args + [w for _, w in checked], on_line=listing.line)
    if outcome.code != 0:
        raise _failure(f"listing {', '.join(paths)} in snapshot {snapshot}", outcome)
    if not listing.snapshot:  # restic 0.14 ignores an unknown id, and succeeds
        raise ResticError(f"no snapshot {snapshot} in this environment's backups")
    for relative, where in checked:
        if where not in listing.nodes:
            raise ResticError(f"no {relative or 'home'} in snapshot {snapshot}")
    return checked, listing


def _failure(doing: str, outcome: run.Outcome, *, snapshot: str | None = None) -> ResticError:
    return ResticError(run.sentence(doing, outcome, snapshot=snapshot))
