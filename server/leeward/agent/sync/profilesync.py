"""`ProfileSync`: one owner's profile in one home, kept in sync both ways (the rule is in
`leeward.agent.sync`'s docstring). The follower long-polls the fleet and pulls new versions; the
uploader pushes what changed here; both report the status, and back off when the fleet fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from leeward.agent.sync.apply import carry_out, plan_for
from leeward.agent.sync.home import keep_theirs, local_sha, under, write_file
from leeward.agent.sync.record import SyncState
from leeward.agent.sync.watch import TrackedWatch
from leeward.common.backoff import SPREAD, Backoff, worth_telling
from leeward.common.clock import Clock, SystemClock
from leeward.common.errors import FleetError
from leeward.common.profilefiles import Limits, LocalFile, over_limits, scan, upload_batches
from leeward.common.threads import in_thread, to_thread_to_the_end
from leeward_protocol.fleet import Refusal, SyncConflict, SyncStatus
from leeward_protocol.profile import (
    AgentProfile,
    FileRemoval,
    Profile,
    ProfileUpload,
    UploadConflict,
    UploadResult,
)

T = TypeVar("T")
log = logging.getLogger("leeward.agent.sync")

RESCAN_SECONDS = 60.0
"""A full scan this often, whatever the file events said (a safety net for missed events)."""
KEEP_CONFLICTS = 20
MAX_BACKOFF_SECONDS = 60.0


class ProfileFleet(Protocol):
    """What the sync asks of the fleet: an `AgentFleet` (the unit tests' fleet is in memory)."""

    async def profile(self) -> AgentProfile: ...

    async def blobs(self, sha256: list[str]) -> dict[str, bytes]: ...

    async def wait(self, after: int) -> int: ...

    async def upload(self, upload: ProfileUpload) -> UploadResult: ...

    async def report(self, *, sync: SyncStatus) -> None: ...


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
        files: Executor | None = None,
        alias: str | None = None,
    ) -> None:
        self.home = home
        self.files = files
        self.alias = alias
        """The home's path as the environment sees it (`/home/OWNER` in a sandbox): absolute
        symbolic links under it lead into the home."""
        """Where file work on the home runs (the owner's threads in a sandboxed environment)."""
        self.fleet = fleet
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.state = SyncState.load(home, owner)
        self.status = SyncStatus(version=self.state.version)
        self.tracked: list[str] = []
        self.limits: Limits | None = None
        self.allow_secrets: list[str] = []
        self.allow_binary: list[str] = []
        self.ssh_banner = True
        """The owner's `[announcements] ssh_banner` (leeward.agent.banner)."""
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

    async def _files(self, func: Callable[..., T], *args: object) -> T:
        return await to_thread_to_the_end(func, *args, executor=self.files)

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
                async with asyncio.timeout(RESCAN_SECONDS):
                    await self._dirty.wait()
            await self._settle()
            if self._watch is not None:
                await in_thread(self._watch.refresh, executor=self.files)
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
            self.ssh_banner = config.announcements.ssh_banner if config else True

    async def _apply(self, profile: Profile) -> bool:
        """Bring the home to `profile` by the rule in `leeward.agent.sync`'s docstring; whether any
        file here or the record changed."""
        state = self.state
        plan = await self._files(plan_for, self.home, profile, state.synced, state.fresh)
        wanted = sorted({f.sha256 for f in plan.write + plan.conflict + plan.keep_aside})
        blobs = await self.fleet.blobs(wanted) if wanted else {}
        missing = [sha for sha in wanted if sha not in blobs]
        if missing:
            raise FleetError(f"the fleet did not send {len(missing)} of the profile's files")
        now = self.clock.now()
        before = (state.version, dict(state.synced))
        conflicts = await self._files(
            carry_out, self.home, state.synced, plan, blobs, now, self.name
        )
        for c in conflicts:
            self._conflicted(c)
        state.version = profile.version
        await self._files(state.save, self.home)
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

    # -- from the home to the fleet

    async def push(self) -> None:
        """Scan the tracked paths and upload what changed here since the last sync."""
        async with self._lock:
            limits = self.limits
            if limits is None:
                return
            changed = False
            for _ in range(3):  # a conflict makes another round (ours on top of theirs)
                files, removed, refusals = await self._files(self._changes, limits)
                self._scan_refused = refusals
                if not files and not removed:
                    break
                changed = True
                again = False
                for batch in upload_batches(files):
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
            alias=self.alias,
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
            files=[f.upload(base_sha256=synced.get(f.path)) for f in files],
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
        await self._files(self.state.save, self.home)
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
                    conflict = keep_theirs(home, c.path, blobs[c.sha256], c.source, c.version, now)
                    log.info(
                        "profile sync: %s was also changed in %s; theirs is %s",
                        c.path,
                        c.source,
                        conflict.copy_path,
                    )
                    synced[c.path] = c.sha256
                    found.append(conflict)
            return found

        for conflict in await self._files(settle):
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


def fleet_backoff() -> Backoff:
    """Between tries of a profile request: 2 s, doubling up to a minute, give or take a fifth."""
    return Backoff(base=2.0, cap=MAX_BACKOFF_SECONDS, jitter=SPREAD)
