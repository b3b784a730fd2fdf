"""Profile sync, the agent's side: the owner's profile goes into the home, edits to tracked
files go back to the fleet, and nothing is lost when two environments edit the same file.

The one record that makes this work is, per path, the content this agent last synced (applied
from the profile or uploaded to it), kept in `~/.local/state/leeward/sync.json` with the
profile version applied. A local file equal to it is unedited: a newer profile version simply
replaces it. A local file that differs was edited here: a newer version from elsewhere is
written next to it as `FILE.leeward-conflict-<source>-<time>`, and the local one is uploaded
on top of it (the other stays in the profile's history and in the copy).

Three loops run while the environment has an owner: the fleet's long poll for new versions;
uploads, after a burst of file events has settled (watchdog) or every minute regardless; and
status reports to the fleet when something changed. Fleet errors are logged, reported and
retried with backoff; they never stop the agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from leeward.common.backoff import SPREAD, Backoff, worth_telling
from leeward.common.clock import Clock, SystemClock
from leeward.common.errors import FleetError
from leeward.common.files import TMP_MARK, write_atomic
from leeward.common.profilefiles import (
    CONFLICT_MARK,
    OWN_STATE,
    Limits,
    LocalFile,
    check_path,
    over_limits,
    scan,
)
from leeward.common.threads import to_thread_to_the_end
from leeward_protocol.fleet import Refusal, SyncConflict, SyncStatus
from leeward_protocol.profile import (
    AgentProfile,
    FileRemoval,
    FileUpload,
    Profile,
    ProfileFile,
    ProfileUpload,
    UploadConflict,
    UploadResult,
)

log = logging.getLogger("leeward.agent.sync")

STATE_FILE = OWN_STATE + "/sync.json"
RESCAN_SECONDS = 60.0
"""A full scan this often, whatever the file events said (a safety net for missed events)."""
UPLOAD_BYTES = 6 << 20
"""Content per upload request: base64 makes it 8 MiB, the fleet's body limit."""
KEEP_CONFLICTS = 20
MAX_BACKOFF_SECONDS = 60.0
_UNREADABLE = "<not a regular file>"
"""What a path that is not a regular file hashes to: never equal to a profile's content."""


class ProfileFleet(Protocol):
    """What the sync asks of the fleet: an `AgentFleet` (the unit tests' fleet is in memory)."""

    async def profile(self) -> AgentProfile: ...

    async def blobs(self, sha256: list[str]) -> dict[str, bytes]: ...

    async def wait(self, after: int) -> int: ...

    async def upload(self, upload: ProfileUpload) -> UploadResult: ...

    async def report(self, *, sync: SyncStatus) -> None: ...


# -- the record of what was synced ----------------------------------------------------------


@dataclass
class SyncState:
    owner: str
    version: int = 0
    synced: dict[str, str] = field(default_factory=dict)
    """path -> sha256 of the content last applied here from the profile or uploaded to it."""
    fresh: bool = True
    """No record yet: this home has never been synced (files in it predate the profile)."""

    @classmethod
    def load(cls, home: Path, owner: str) -> SyncState:
        try:
            raw = json.loads((home / STATE_FILE).read_text())
            if raw.get("owner") != owner:
                return cls(owner)
            synced = {str(k): str(v) for k, v in dict(raw["synced"]).items()}
            return cls(owner, int(raw["version"]), synced, fresh=False)
        except FileNotFoundError:
            return cls(owner)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("profile sync: %s unreadable (%s); starting afresh", STATE_FILE, exc)
            return cls(owner)

    def save(self, home: Path) -> None:
        """Atomically: a crash leaves the old record or the new one."""
        path = home / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"owner": self.owner, "version": self.version, "synced": self.synced}
        write_atomic(path, json.dumps(body, indent=1, sort_keys=True))
        self.fresh = False


# -- files in the home ----------------------------------------------------------------------


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


def _remove_file(home: Path, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISREG((home / path).lstat().st_mode):
            (home / path).unlink()


def under(path: str, tracked: Iterable[str]) -> bool:
    return any(path == t or path.startswith(t + "/") for t in tracked)


# -- the engine -----------------------------------------------------------------------------


class ProfileSync:
    """One owner's profile in one home. `begin()` applies the profile (bounded), `start()`
    runs the loops, `stop()` ends them."""

    def __init__(
        self,
        home: Path,
        fleet: ProfileFleet,
        *,
        owner: str,
        name: str,
        clock: Clock | None = None,
    ) -> None:
        self.home = home
        self.fleet = fleet
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.state = SyncState.load(home, owner)
        self.status = SyncStatus(version=self.state.version)
        self.tracked: list[str] = []
        self.limits: Limits | None = None
        self.allow_secrets: list[str] = []
        self.allow_binary: list[str] = []
        self.debounce = 0.25
        self._profile_sizes: dict[str, int] = {}
        self._fleet_refused: dict[str, tuple[str, Refusal]] = {}
        self._scan_refused: list[Refusal] = []
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._last_touch = float("-inf")
        self._reported: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watch: TrackedWatch | None = None

    # -- the loops

    async def begin(self, within: float = 10.0) -> None:
        """The first sync, before the environment is ready: the profile into the home. A fleet
        that does not answer `within` seconds is recorded as the error; the loops retry."""
        try:
            async with asyncio.timeout(within):
                await self.pull()
        except TimeoutError:
            self._failed(f"the fleet did not send the profile within {within:g} s")
        except FleetError as exc:
            self._failed(f"cannot fetch the profile: {exc}")
        except Exception as exc:
            log.exception("profile sync: the first sync failed")
            self._failed(f"the first sync failed: {exc}")

    def start(self) -> None:
        try:
            self._watch = TrackedWatch(self.home, lambda: self.tracked, self._touched)
        except Exception as exc:  # e.g. out of inotify instances: the minute's scan remains
            log.warning("profile sync: cannot watch the tracked files: %s", exc)
        self._tasks = [
            asyncio.create_task(self._follow(), name="profile-follow"),
            asyncio.create_task(self._uploads(), name="profile-uploads"),
        ]

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _follow(self) -> None:
        """Long-poll the fleet for versions newer than the one applied, and apply them."""
        backoff = fleet_backoff()
        while True:
            try:
                if self.limits is None:  # the first sync failed: fetch the profile first
                    await self.pull()
                started = self.clock.monotonic()
                latest = await self.fleet.wait(self.state.version)
                if latest != self.state.version:
                    await self.pull()
                elif self.clock.monotonic() - started < 1.0:
                    await self.clock.sleep(1.0)  # a fleet that does not hold the poll
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(f"cannot follow the profile: {exc}", backoff.attempt + 1)
                await self.report()
                await self.clock.sleep(backoff.next())

    async def _uploads(self) -> None:
        """Upload local edits once a burst of file events has settled, and every minute."""
        backoff = fleet_backoff()
        self._dirty.set()  # a scan at once: edits made while the agent was down
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RESCAN_SECONDS)
            await self._settle()
            if self._watch is not None:
                await asyncio.to_thread(self._watch.refresh)
            try:
                if self.limits is not None:
                    await self.push()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(f"cannot upload changes: {exc}", backoff.attempt + 1)
                await self.report()
                await self.clock.sleep(backoff.next())
                self._dirty.set()

    def _touched(self) -> None:
        """A file event (on the loop): an upload once the events have stopped for a while."""
        self._last_touch = self.clock.monotonic()
        self._dirty.set()

    async def _settle(self) -> None:
        """Until no event came for `debounce` seconds (an editor writes a file in several
        steps), within 8 × `debounce` of the first: a file rewritten all the time still goes."""
        first = self.clock.monotonic()
        while True:
            self._dirty.clear()
            now = self.clock.monotonic()
            quiet_at = self._last_touch + self.debounce
            if now >= quiet_at or now - first >= 8 * self.debounce:
                return
            await self.clock.sleep(quiet_at - now)

    # -- from the fleet to the home

    async def pull(self) -> None:
        """Fetch the profile and apply it if its version is not the one applied here."""
        async with self._lock:
            agent = await self.fleet.profile()
            if agent.owner != self.state.owner:
                raise FleetError(
                    f"the fleet gives {agent.owner or 'nobody'}'s profile, "
                    f"this environment is {self.state.owner}'s"
                )
            self._adopt(agent)
            profile = agent.profile
            if profile is None:
                return
            self._profile_sizes = {f.path: f.size for f in profile.files}
            if profile.version == self.state.version and not self.state.fresh:
                if self.status.error or self._reported is None:
                    self._succeeded()
                await self.report()
                return
            changed = await self._apply(profile)
            self._succeeded()
            await self.report(force=changed)

    def _adopt(self, agent: AgentProfile) -> None:
        self.tracked = list(agent.tracked)
        self.debounce = agent.debounce_seconds
        profile = agent.profile
        if profile is not None:
            limits = profile.limits
            self.limits = Limits(limits.max_file_bytes, limits.max_files, limits.max_total_bytes)
            config = profile.config
            self.allow_secrets = list(config.allow_secrets) if config else []
            self.allow_binary = list(config.allow_binary) if config else []

    async def _apply(self, profile: Profile) -> bool:
        """Bring the home to `profile` by the rule in the module's docstring; whether any
        file here or the record changed."""
        state = self.state
        plan = await to_thread_to_the_end(_plan, self.home, profile, state.synced, state.fresh)
        wanted = sorted({f.sha256 for f in plan.write + plan.conflict + plan.keep_aside})
        blobs = await self.fleet.blobs(wanted) if wanted else {}
        missing = [sha for sha in wanted if sha not in blobs]
        if missing:
            raise FleetError(f"the fleet did not send {len(missing)} of the profile's files")
        now = self.clock.now()
        before = (state.version, dict(state.synced))
        conflicts = await to_thread_to_the_end(self._carry_out, plan, blobs, now)
        for c in conflicts:
            self._conflicted(c)
        state.version = profile.version
        await to_thread_to_the_end(state.save, self.home)
        if conflicts:
            self._dirty.set()  # ours goes on top
        changed = bool(plan.write or plan.conflict or plan.delete) or before != (
            state.version,
            state.synced,
        )
        if plan.write or plan.conflict or plan.delete:
            log.info(
                "profile sync: version %d applied (%d written, %d removed, %d conflicts)",
                profile.version,
                len(plan.write),
                len(plan.delete),
                len(conflicts),
            )
        return changed

    def _carry_out(self, plan: _Plan, blobs: dict[str, bytes], now: datetime) -> list[SyncConflict]:
        home, synced = self.home, self.state.synced
        conflicts: list[SyncConflict] = []
        for path, sha in plan.record.items():
            synced[path] = sha
        for path in plan.forget:
            synced.pop(path, None)
        for f in plan.keep_aside:
            # A home that predates the profile: the profile wins, what was here is kept aside.
            try:
                copy = conflict_copy(home, f.path, (home / f.path).read_bytes(), self.name, now)
                log.info("profile sync: %s was here before the profile; kept as %s", f.path, copy)
            except (OSError, UnsafePath) as exc:
                log.warning("profile sync: cannot keep %s aside: %s", f.path, exc)
                continue
            plan.write.append(f)
        for f in plan.write:
            seen = plan.seen.get(f.path)
            now_sha = local_sha(home, f.path)
            if now_sha != seen and now_sha != f.sha256 and f not in plan.keep_aside:
                plan.conflict.append(f)  # edited while we were fetching: a conflict after all
                continue
            try:
                write_file(home, f.path, blobs[f.sha256], f.mode, f.modified_at)
            except (OSError, UnsafePath) as exc:
                log.warning("profile sync: cannot write %s: %s", f.path, exc)
                continue
            synced[f.path] = f.sha256
        for f in plan.conflict:
            try:
                copy = conflict_copy(home, f.path, blobs[f.sha256], f.source, now)
            except (OSError, UnsafePath) as exc:
                log.warning("profile sync: cannot write the other version of %s: %s", f.path, exc)
                continue
            log.info(
                "profile sync: %s was edited here and in %s; theirs is %s", f.path, f.source, copy
            )
            synced[f.path] = f.sha256
            conflicts.append(
                SyncConflict(
                    path=f.path,
                    copy_path=copy,
                    other_environment=f.source,
                    version=f.version,
                    at=now,
                )
            )
        for path in plan.delete:
            if local_sha(home, path) == synced.get(path):
                try:
                    _remove_file(home, path)
                except OSError as exc:
                    log.warning("profile sync: cannot remove %s: %s", path, exc)
                    continue
            synced.pop(path, None)
        return conflicts

    # -- from the home to the fleet

    async def push(self) -> None:
        """Scan the tracked paths and upload what changed here since the last sync."""
        async with self._lock:
            limits = self.limits
            if limits is None:
                return
            changed = False
            for _ in range(3):  # a conflict makes another round (ours on top of theirs)
                files, removed, refusals = await to_thread_to_the_end(self._changes, limits)
                self._scan_refused = refusals
                if not files and not removed:
                    break
                changed = True
                again = False
                for batch in _batches(files):
                    again |= await self._upload(batch, removed)
                    removed = []
                if not again:
                    break
            refused = self._refused()
            if changed or refused != self.status.refused:
                self.status.refused = refused
                self._succeeded()
                await self.report(force=changed)
            elif self.status.error:
                self._succeeded()
                await self.report()

    def _changes(self, limits: Limits) -> tuple[list[LocalFile], list[str], list[Refusal]]:
        found, refused = scan(
            self.home,
            self.tracked,
            limits,
            allow_secrets=self.allow_secrets,
            allow_binary=self.allow_binary,
        )
        synced = self.state.synced
        present = {f.path for f in found} | {r.path for r in refused}
        for path in [p for p in self._fleet_refused if p not in present]:
            del self._fleet_refused[path]
        changed = [f for f in found if f.sha256 != synced.get(f.path)]
        # Content the fleet refused before is not sent again until it changes.
        changed = [
            f
            for f in changed
            if f.path not in self._fleet_refused or self._fleet_refused[f.path][0] != f.sha256
        ]
        kept, over = over_limits(self._profile_sizes, changed, limits)
        removed = [
            path
            for path in synced
            if under(path, self.tracked)
            and path not in present
            and not (self.home / path).exists()
            and not (self.home / path).is_symlink()
        ]
        return kept, removed, refused + over

    async def _upload(self, files: list[LocalFile], removed: list[str]) -> bool:
        """One upload request; whether a conflict needs another round."""
        synced = self.state.synced
        upload = ProfileUpload(
            files=[
                FileUpload(
                    path=f.path,
                    content=base64.b64encode(f.data).decode(),
                    mode=f.mode,
                    modified_at=f.modified_at,
                    base_sha256=synced.get(f.path),
                )
                for f in files
            ],
            removed=[FileRemoval(path=p, base_sha256=synced.get(p)) for p in removed],
        )
        was = self.state.version
        result = await self.fleet.upload(upload)
        sent = {f.path: f for f in files}
        for path in result.stored:
            if path in sent:
                synced[path] = sent[path].sha256
                self._profile_sizes[path] = sent[path].size
                self._fleet_refused.pop(path, None)
        for path in result.removed:
            synced.pop(path, None)
            self._profile_sizes.pop(path, None)
        for r in result.refused:
            if r.path in sent:
                self._fleet_refused[r.path] = (sent[r.path].sha256, r)
        wrote = bool(result.stored or result.removed)
        # Only our change in this version: it is applied here. Otherwise the follower fetches it.
        if result.version == was + (1 if wrote else 0):
            self.state.version = result.version
        if result.conflicts:
            await self._resolve(result.conflicts)
        await to_thread_to_the_end(self.state.save, self.home)
        if wrote:
            log.info(
                "profile sync: stored %d, removed %d (version %d)",
                len(result.stored),
                len(result.removed),
                result.version,
            )
        return bool(result.conflicts)

    async def _resolve(self, conflicts: list[UploadConflict]) -> None:
        """The profile held something else than our base: theirs next to ours, ours on top."""
        wanted = sorted({c.sha256 for c in conflicts if c.sha256 is not None})
        blobs = await self.fleet.blobs(wanted) if wanted else {}
        now = self.clock.now()

        def settle() -> list[SyncConflict]:
            home, synced = self.home, self.state.synced
            found: list[SyncConflict] = []
            for c in conflicts:
                mine = local_sha(home, c.path)
                if c.sha256 is None:
                    synced.pop(c.path, None)  # removed there: ours goes in as new
                elif mine == c.sha256:
                    synced[c.path] = c.sha256  # the same edit, made twice
                elif c.sha256 not in blobs:
                    log.warning("profile sync: the fleet did not send %s's content", c.path)
                elif mine is None:
                    # Removed here, changed there: theirs comes back (nothing is lost).
                    data = blobs[c.sha256]
                    write_file(home, c.path, data, 0o644, now)
                    synced[c.path] = c.sha256
                else:
                    copy = conflict_copy(home, c.path, blobs[c.sha256], c.source, now)
                    log.info(
                        "profile sync: %s was also changed in %s; theirs is %s",
                        c.path,
                        c.source,
                        copy,
                    )
                    synced[c.path] = c.sha256
                    found.append(
                        SyncConflict(
                            path=c.path,
                            copy_path=copy,
                            other_environment=c.source,
                            version=c.version,
                            at=now,
                        )
                    )
            return found

        for conflict in await to_thread_to_the_end(settle):
            self._conflicted(conflict)

    # -- status

    def _refused(self) -> list[Refusal]:
        refused = list(self._scan_refused)
        paths = {r.path for r in refused}
        for _, r in self._fleet_refused.values():
            if r.path not in paths:
                refused.append(r)
        return refused

    def _conflicted(self, conflict: SyncConflict) -> None:
        self.status.conflicts = [*self.status.conflicts, conflict][-KEEP_CONFLICTS:]

    def _succeeded(self) -> None:
        self.status.version = self.state.version
        self.status.synced_at = self.clock.now()
        self.status.error = ""

    def _failed(self, error: str, failures: int = 1) -> None:
        if worth_telling(failures):
            log.warning("profile sync: %s", error)
        self.status.error = error

    async def report(self, *, force: bool = False) -> None:
        """Tell the fleet the sync status, when it changed (`force`: the sync changed
        something). A failed report is retried with the next one."""
        self.status.version = self.state.version
        key = self.status.model_dump(exclude={"synced_at"})
        if not force and key == self._reported:
            return
        try:
            await self.fleet.report(sync=self.status.model_copy(deep=True))
        except FleetError as exc:
            if self._reported is not None:  # the first failure after a success: not a flood
                log.warning("profile sync: cannot report the status: %s", exc)
            self._reported = None
            return
        self._reported = key


@dataclass
class _Plan:
    write: list[ProfileFile] = field(default_factory=list)
    conflict: list[ProfileFile] = field(default_factory=list)
    keep_aside: list[ProfileFile] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    record: dict[str, str] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    seen: dict[str, str | None] = field(default_factory=dict)


def _plan(home: Path, profile: Profile, synced: dict[str, str], fresh: bool) -> _Plan:
    """What applying `profile` does to each path (nothing written yet)."""
    plan = _Plan()
    for f in profile.files:
        if check_path(f.path) is not None:
            log.warning("profile sync: the profile holds %r, not a path it may hold", f.path)
            continue
        mine = local_sha(home, f.path)
        last = synced.get(f.path)
        plan.seen[f.path] = mine
        if mine == f.sha256:
            plan.record[f.path] = f.sha256
        elif last == f.sha256:
            pass  # theirs is what we last synced: the difference is ours, to upload
        elif mine is None or mine == last:
            plan.write.append(f)
        elif fresh and last is None:
            plan.keep_aside.append(f)
        else:
            plan.conflict.append(f)
    listed = {f.path for f in profile.files}
    for path in synced:
        if path in listed:
            continue
        mine = local_sha(home, path)
        if mine is not None and mine == synced[path]:
            plan.delete.append(path)
        else:
            plan.forget.append(path)  # edited here (or gone): ours goes back in as new
    return plan


def _batches(files: list[LocalFile]) -> list[list[LocalFile]]:
    """Upload requests under the fleet's body limit (the first carries the removals)."""
    batches: list[list[LocalFile]] = [[]]
    size = 0
    for f in files:
        if batches[-1] and size + f.size > UPLOAD_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += f.size
    return batches


def fleet_backoff() -> Backoff:
    """Between tries of a profile request: 2 s, doubling up to a minute, give or take a fifth."""
    return Backoff(base=2.0, cap=MAX_BACKOFF_SECONDS, jitter=SPREAD)


# -- file events ----------------------------------------------------------------------------


class TrackedWatch:
    """watchdog on the tracked paths: each tracked directory recursively, and for the rest the
    closest directory that exists (so that a tracked file or directory created later is seen).
    `touched` is called from watchdog's thread; `refresh()` follows directories that appeared.
    """

    def __init__(self, home: Path, tracked: Callable[[], list[str]], touched: Callable[[], None]):
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.home = home
        self._tracked = tracked
        self._touched = touched
        self._loop = asyncio.get_running_loop()
        self._watches: dict[tuple[str, bool], Any] = {}
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
                if any(watch.matters(p) for p in paths if p):
                    loop = watch._loop
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(watch._touched)

        self._handler = Handler()
        self._observer: Any = Observer()
        self._observer.daemon = True
        self._observer.start()
        self.refresh()

    def matters(self, full: str) -> bool:
        try:
            rel = Path(full).relative_to(self.home).as_posix()
        except ValueError:
            return False
        name = rel.rsplit("/", 1)[-1]
        if CONFLICT_MARK in name or TMP_MARK in name or under(rel, [OWN_STATE]):
            return False
        tracked = self._tracked()
        # The path itself, or a directory on the way to a tracked path (created or moved).
        return under(rel, tracked) or any(t.startswith(rel + "/") for t in tracked)

    def refresh(self) -> None:
        wanted: set[tuple[str, bool]] = set()
        for top in self._tracked():
            full = self.home / top
            if full.is_dir() and not full.is_symlink():
                wanted.add((str(full), True))
                continue
            directory = full.parent
            while directory != self.home and not directory.is_dir():
                directory = directory.parent
            if directory.is_relative_to(self.home):
                wanted.add((str(directory), False))
        for key in set(self._watches) - wanted:
            with contextlib.suppress(Exception):
                self._observer.unschedule(self._watches.pop(key))
        for key in wanted - set(self._watches):
            try:
                self._watches[key] = self._observer.schedule(
                    self._handler, key[0], recursive=key[1]
                )
            except OSError as exc:  # gone meanwhile, or out of inotify watches
                log.warning("profile sync: cannot watch %s: %s", key[0], exc)

    def stop(self) -> None:
        self._observer.stop()
        with contextlib.suppress(RuntimeError):
            self._observer.join(timeout=2)
