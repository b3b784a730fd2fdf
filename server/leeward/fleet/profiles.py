"""The profile store: each user's files and config.toml, versioned, content stored once per hash.

Every change makes a new version holding the whole set of files, so any version is read or
restored as it was; the last `history_versions` are kept and contents no version holds any more
are dropped with them. Writes for one user are serialised (a row lock on PostgreSQL, the single
writer on SQLite), so two environments uploading at once get consecutive versions, and the
second one's stale edits come back as conflicts instead of silently replacing the first's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.clock import Clock
from leeward.common.profilefiles import (
    Limits,
    LocalFile,
    check_content,
    check_path,
    over_limits,
    refusal,
    too_large,
)
from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Invalid, NotFound
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import (
    ProfileBlobRow,
    ProfileFileRow,
    ProfileVersionRow,
    UserRow,
)
from leeward_protocol.fleet import Refusal
from leeward_protocol.profile import (
    Profile,
    ProfileFile,
    ProfileHistory,
    ProfileLimits,
    ProfileUpload,
    ProfileVersion,
    UploadConflict,
    UploadResult,
)
from leeward_protocol.userconfig import UserConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    sha256: str
    size: int
    mode: int
    modified_at: datetime
    source: str
    changed_in: int


@dataclass
class Snapshot:
    """One version as the store holds it."""

    version: int
    created_at: datetime | None
    config: str | None
    files: dict[str, Entry]


@dataclass
class Change:
    files: dict[str, Entry]
    config: str | None
    source: str
    summary: str
    changed: list[str]
    removed: list[str]
    config_changed: bool
    blobs: dict[str, bytes]


class ProfileStore:
    def __init__(self, store: Store, config: FleetConfig, clock: Clock) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._changed: dict[str, asyncio.Event] = {}
        self._closing = asyncio.Event()

    def close(self) -> None:
        """The fleet is stopping: every held `wait` answers at once."""
        self._closing.set()
        for event in self._changed.values():
            event.set()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def limits(self) -> ProfileLimits:
        c = self.config.profile_store
        return ProfileLimits(
            max_file_bytes=c.max_file_bytes,
            max_files=c.max_files,
            max_total_bytes=c.max_total_bytes,
            history_versions=c.history_versions,
        )

    @property
    def _limits(self) -> Limits:
        c = self.config.profile_store
        return Limits(c.max_file_bytes, c.max_files, c.max_total_bytes)

    async def profile(self, user: str, version: int | None = None) -> Profile:
        async with self.store.read() as session:
            snapshot = await self._snapshot(session, user, version)
        if snapshot is None:
            raise NotFound(
                f"Version {version} of {user}'s profile is not kept (the last "
                f"{self.config.profile_store.history_versions} are); `leeward profile history` "
                "lists them."
            )
        return self._resource(user, snapshot)

    async def version(self, user: str) -> int:
        async with self.store.read() as session:
            found = await session.scalar(
                select(func.max(ProfileVersionRow.version)).where(ProfileVersionRow.user == user)
            )
        return int(found or 0)

    async def user_config(self, user: str) -> UserConfig | None:
        async with self.store.read() as session:
            raw = await session.scalar(
                select(ProfileVersionRow.config)
                .where(ProfileVersionRow.user == user)
                .order_by(ProfileVersionRow.version.desc())
                .limit(1)
            )
        return UserConfig.model_validate_json(raw) if raw else None

    async def history(self, user: str, path: str | None = None) -> ProfileHistory:
        async with self.store.read() as session:
            rows = (
                await session.scalars(
                    select(ProfileVersionRow)
                    .where(ProfileVersionRow.user == user)
                    .order_by(ProfileVersionRow.version.desc())
                )
            ).all()
        versions = []
        for row in rows:
            changed, removed = json.loads(row.changed), json.loads(row.removed)
            if path is not None and path not in changed and path not in removed:
                continue
            versions.append(
                ProfileVersion(
                    version=row.version,
                    created_at=row.created_at,
                    source=row.source,
                    summary=row.summary,
                    changed=changed,
                    removed=removed,
                    config_changed=row.config_changed,
                )
            )
        return ProfileHistory(user=user, versions=versions)

    async def read_file(
        self, user: str, path: str, version: int | None = None
    ) -> tuple[ProfileFile, bytes]:
        async with self.store.read() as session:
            snapshot = await self._snapshot(session, user, version)
            entry = snapshot.files.get(path) if snapshot is not None else None
            if snapshot is None or entry is None:
                at = f"version {version}" if version is not None else "the latest version"
                raise NotFound(
                    f"{path} is not in {at} of {user}'s profile; `leeward profile show` lists "
                    "its files."
                )
            content = await session.scalar(
                select(ProfileBlobRow.content).where(ProfileBlobRow.sha256 == entry.sha256)
            )
        assert content is not None
        return _file(path, entry), bytes(content)

    async def blobs(self, user: str, wanted: list[str]) -> dict[str, bytes]:
        """Contents by hash, only those in one of `user`'s kept versions."""
        if not wanted:
            return {}
        async with self.store.read() as session:
            rows = await session.execute(
                select(ProfileBlobRow.sha256, ProfileBlobRow.content)
                .where(ProfileBlobRow.sha256.in_(set(wanted)))
                .where(
                    ProfileBlobRow.sha256.in_(
                        select(ProfileFileRow.sha256)
                        .join(ProfileVersionRow, ProfileVersionRow.id == ProfileFileRow.version_id)
                        .where(ProfileVersionRow.user == user)
                    )
                )
            )
            found = {sha: bytes(content) for sha, content in rows.all()}
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise NotFound(f"No file with content {missing[0]} is in this profile.")
        return found

    async def wait(self, user: str, after: int, seconds: float) -> int:
        """The latest version, once it is past `after` or `seconds` have passed. Woken at once
        by this replica's writes; on PostgreSQL, other replicas' are seen within a second (a
        SQLite store has one fleet process, so it does not look again until woken)."""
        deadline = self.clock.monotonic() + seconds
        every = 1.0 if self.store.dialect == "postgresql" else seconds
        while True:
            # The event first: a write between reading the version and waiting still wakes us.
            event = self._changed.setdefault(user, asyncio.Event())
            current = await self.version(user)
            left = deadline - self.clock.monotonic()
            if current > after or left <= 0 or self._closing.is_set():
                return current
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, every)):
                    await event.wait()

    # -- writing ---------------------------------------------------------------------------------

    async def upload(
        self, user: str, upload: ProfileUpload, source: str, *, check_base: bool
    ) -> UploadResult:
        """Store the uploaded files that pass the checks and do not conflict, in one version.
        `check_base`: an agent's upload, where a file changed by someone else since the
        uploader last saw it is a conflict (a user's own upload simply replaces it)."""
        refused: list[Refusal] = []
        decoded: list[tuple[LocalFile, str | None]] = []
        limit = self.config.profile_store.max_file_bytes
        seen: set[str] = set()
        for item in upload.files:
            bad = check_path(item.path)
            if bad is None and item.path in seen:
                bad = refusal(item.path, "bad-content", f"{item.path} is in the upload twice")
            if bad is not None:
                refused.append(bad)
                continue
            seen.add(item.path)
            if len(item.content) > (limit + 2) // 3 * 4 + 4:
                refused.append(too_large(item.path, len(item.content) * 3 // 4, limit))
                continue
            try:
                data = base64.b64decode(item.content, validate=True)
            except (binascii.Error, ValueError):
                refused.append(
                    refusal(item.path, "bad-content", f"{item.path}: `content` is not base64")
                )
                continue
            if len(data) > limit:
                refused.append(too_large(item.path, len(data), limit))
                continue
            local = LocalFile(
                path=item.path,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                mode=item.mode & 0o777,
                modified_at=item.modified_at,
                data=data,
            )
            decoded.append((local, item.base_sha256))
        removals = []
        for gone in upload.removed:
            bad = check_path(gone.path)
            if bad is not None:
                refused.append(bad)
            else:
                removals.append(gone)
        conflicts: list[UploadConflict] = []
        outcome: dict[str, list[str]] = {"stored": [], "removed": []}

        def build(current: Snapshot) -> Change | None:
            config = UserConfig.model_validate_json(current.config) if current.config else None
            allow_secrets = config.allow_secrets if config else []
            allow_binary = config.allow_binary if config else []
            candidates: list[LocalFile] = []
            conflicts.clear()
            late_refusals: list[Refusal] = []
            for local, base in decoded:
                now = current.files.get(local.path)
                if now is not None and now.sha256 == local.sha256 and now.mode == local.mode:
                    continue  # already so
                if check_base and (now.sha256 if now else None) != base:
                    conflicts.append(_conflict(local.path, now, current.version))
                    continue
                problem = check_content(
                    local.path, local.data, allow_secrets=allow_secrets, allow_binary=allow_binary
                )
                if problem is not None:
                    late_refusals.append(problem)
                    continue
                candidates.append(local)
            sizes = {path: entry.size for path, entry in current.files.items()}
            kept, over = over_limits(sizes, candidates, self._limits)
            refused.extend(late_refusals + over)
            files = dict(current.files)
            version = current.version + 1
            for local in kept:
                files[local.path] = Entry(
                    local.sha256, local.size, local.mode, local.modified_at, source, version
                )
            removed = []
            for gone in removals:
                now = current.files.get(gone.path)
                if now is None:
                    continue
                if check_base and now.sha256 != gone.base_sha256:
                    conflicts.append(_conflict(gone.path, now, current.version))
                    continue
                del files[gone.path]
                removed.append(gone.path)
            outcome["stored"] = [k.path for k in kept]
            outcome["removed"] = removed
            if not kept and not removed:
                return None
            return Change(
                files=files,
                config=current.config,
                source=source,
                summary=_summary(outcome["stored"], removed, source),
                changed=outcome["stored"],
                removed=removed,
                config_changed=False,
                blobs={k.sha256: k.data for k in kept},
            )

        version = await self._write(user, build)
        if refused:
            log.info(
                "profile of %s: refused %s", user, "; ".join(f"{r.path}: {r.code}" for r in refused)
            )
        return UploadResult(
            version=version,
            stored=outcome["stored"],
            removed=outcome["removed"],
            refused=refused,
            conflicts=conflicts,
        )

    async def set_config(self, user: str, config: UserConfig) -> Profile:
        unknown = [name for name in config.features if self.config.feature(name) is None]
        if unknown:
            raise Invalid(
                f"features: {', '.join(unknown)} not in this fleet's catalog; "
                "`leeward features list` shows what is.",
                field="features",
            )
        text = config.model_dump_json()

        def build(current: Snapshot) -> Change | None:
            if current.config == text:
                return None
            return Change(
                files=current.files,
                config=text,
                source="config.toml",
                summary="config.toml changed",
                changed=[],
                removed=[],
                config_changed=True,
                blobs={},
            )

        await self._write(user, build)
        return await self.profile(user)

    async def restore(self, user: str, version: int, paths: list[str]) -> Profile:
        async with self.store.read() as session:
            target = await self._snapshot(session, user, version)
        if target is None or target.version == 0:
            raise NotFound(
                f"Version {version} of {user}'s profile is not kept; `leeward profile history` "
                "lists the versions there are."
            )
        for path in paths:
            bad = check_path(path)
            if bad is not None:
                raise Invalid(bad.reason, field="paths")

        def build(current: Snapshot) -> Change | None:
            wanted = paths or sorted(set(current.files) | set(target.files))
            files = dict(current.files)
            changed, removed = [], []
            for path in wanted:
                old, now = target.files.get(path), current.files.get(path)
                if old is None and now is not None:
                    del files[path]
                    removed.append(path)
                elif old is not None and (
                    now is None or (now.sha256, now.mode) != (old.sha256, old.mode)
                ):
                    files[path] = replace(old, source="restore", changed_in=current.version + 1)
                    changed.append(path)
            config = target.config if not paths else current.config
            if not changed and not removed and config == current.config:
                return None
            what = f"{len(paths)} file(s) of" if paths else ""
            return Change(
                files=files,
                config=config,
                source="restore",
                summary=f"restored {what} version {version}".replace("  ", " "),
                changed=changed,
                removed=removed,
                config_changed=config != current.config,
                blobs={},
            )

        await self._write(user, build)
        return await self.profile(user)

    async def _write(self, user: str, build: Callable[[Snapshot], Change | None]) -> int:
        """One new version from `build(latest)`, or none when it returns None; the version."""
        async with self.store.write() as session:
            lock = select(UserRow.name).where(UserRow.name == user)
            if session.get_bind().dialect.name == "postgresql":
                lock = lock.with_for_update()
            if await session.scalar(lock) is None:
                raise NotFound(f"No user {user}.")
            current = await self._snapshot(session, user, None)
            assert current is not None
            change = build(current)
            if change is None:
                return current.version
            version = current.version + 1
            now = self.clock.now()
            if change.blobs:
                have = set(
                    (
                        await session.scalars(
                            select(ProfileBlobRow.sha256).where(
                                ProfileBlobRow.sha256.in_(list(change.blobs))
                            )
                        )
                    ).all()
                )
                session.add_all(
                    ProfileBlobRow(sha256=sha, size=len(data), content=data, created_at=now)
                    for sha, data in change.blobs.items()
                    if sha not in have
                )
            row = ProfileVersionRow(
                user=user,
                version=version,
                created_at=now,
                source=change.source[:64],
                summary=change.summary,
                changed=json.dumps(change.changed),
                removed=json.dumps(change.removed),
                config=change.config,
                config_changed=change.config_changed,
            )
            session.add(row)
            await session.flush()
            session.add_all(
                ProfileFileRow(
                    version_id=row.id,
                    path=path,
                    sha256=e.sha256,
                    size=e.size,
                    mode=e.mode,
                    modified_at=e.modified_at,
                    source=e.source[:64],
                    changed_in=e.changed_in,
                )
                for path, e in sorted(change.files.items())
            )
            await session.flush()
            await self._prune(session, user, version)
        self._changed.pop(user, asyncio.Event()).set()
        log.info("profile of %s: version %d (%s)", user, version, change.summary)
        return version

    async def _prune(self, session: AsyncSession, user: str, version: int) -> None:
        keep = self.config.profile_store.history_versions
        old = (
            await session.scalars(
                select(ProfileVersionRow.id).where(
                    ProfileVersionRow.user == user, ProfileVersionRow.version <= version - keep
                )
            )
        ).all()
        if not old:
            return
        shas = set(
            (
                await session.scalars(
                    select(ProfileFileRow.sha256).where(ProfileFileRow.version_id.in_(old))
                )
            ).all()
        )
        await session.execute(delete(ProfileFileRow).where(ProfileFileRow.version_id.in_(old)))
        await session.execute(delete(ProfileVersionRow).where(ProfileVersionRow.id.in_(old)))
        if shas:
            still = select(ProfileFileRow.sha256).where(ProfileFileRow.sha256.in_(shas))
            await session.execute(
                delete(ProfileBlobRow).where(
                    ProfileBlobRow.sha256.in_(shas), ProfileBlobRow.sha256.not_in(still)
                )
            )

    # -- helpers ---------------------------------------------------------------------------------

    async def _snapshot(
        self, session: AsyncSession, user: str, version: int | None
    ) -> Snapshot | None:
        query = select(ProfileVersionRow).where(ProfileVersionRow.user == user)
        if version is None:
            query = query.order_by(ProfileVersionRow.version.desc()).limit(1)
        else:
            query = query.where(ProfileVersionRow.version == version)
        row = await session.scalar(query)
        if row is None:
            return Snapshot(0, None, None, {}) if version in (None, 0) else None
        files = {
            f.path: Entry(f.sha256, f.size, f.mode, f.modified_at, f.source, f.changed_in)
            for f in (
                await session.scalars(
                    select(ProfileFileRow).where(ProfileFileRow.version_id == row.id)
                )
            ).all()
        }
        return Snapshot(row.version, row.created_at, row.config, files)

    def _resource(self, user: str, snapshot: Snapshot) -> Profile:
        return Profile(
            user=user,
            version=snapshot.version,
            created_at=snapshot.created_at,
            config=UserConfig.model_validate_json(snapshot.config) if snapshot.config else None,
            files=[_file(path, e) for path, e in sorted(snapshot.files.items())],
            limits=self.limits,
        )


def _file(path: str, e: Entry) -> ProfileFile:
    return ProfileFile(
        path=path,
        sha256=e.sha256,
        size=e.size,
        mode=e.mode,
        modified_at=e.modified_at,
        source=e.source,
        version=e.changed_in,
    )


def _conflict(path: str, now: Entry | None, version: int) -> UploadConflict:
    return UploadConflict(
        path=path,
        sha256=now.sha256 if now else None,
        version=now.changed_in if now else version,
        source=now.source if now else "",
    )


def _summary(changed: list[str], removed: list[str], source: str) -> str:
    parts = []
    if changed:
        parts.append(f"{', '.join(changed[:3])}{' and more' if len(changed) > 3 else ''} changed")
    if removed:
        parts.append(f"{', '.join(removed[:3])}{' and more' if len(removed) > 3 else ''} removed")
    return f"{'; '.join(parts)} (from {source})"
