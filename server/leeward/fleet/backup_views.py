"""What a devserver's backups look like to its owner and to operators: finding a devserver's
backups (a deleted one's too, the path after a lost host), listing them, one snapshot's
entries, and the schedule (leeward.fleet.backups runs them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.auth import Principal
from leeward.fleet.backups import (
    check_backed_up,
    engine_repository,
    latest,
    refresh_status,
    repository_of,
    status_of,
    to_backup,
)
from leeward.fleet.errors import Conflict, Invalid, NotFound
from leeward.fleet.ownership import find_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import BackupRepositoryRow, BackupRow, EnvironmentRow
from leeward.providers import restic
from leeward_protocol.backup import BackupDetail, BackupEntry, BackupList, BackupState
from leeward_protocol.fleet import BackupStatus, EnvironmentKind

SHOWN = 200
"""The most backups a list shows (newest first)."""


async def find_backed_up(session: AsyncSession, who: Principal, ref: str) -> EnvironmentRow:
    """A devserver whose backups `who` may see: a live one by id or name, or (the path after a
    lost host) a deleted or failed one of theirs by id, or by the name it last had."""
    try:
        row = await find_environment(session, who, ref)
    except NotFound:
        query = select(EnvironmentRow).where(
            EnvironmentRow.name == ref, EnvironmentRow.backup_repository.is_not(None)
        )
        if not who.is_admin:
            query = query.where(EnvironmentRow.owner == who.user)
        found = await session.scalar(query.order_by(EnvironmentRow.created_at.desc()).limit(1))
        if found is None:
            raise
        row = found
    if row.kind != EnvironmentKind.DEVSERVER:
        raise Invalid(f"{row.name} is a container: only devservers are backed up.")
    return row


async def find_backup(
    session: AsyncSession, env: EnvironmentRow, backup_id: int | None
) -> BackupRow:
    """One of the devserver's successful backups (the latest if None). Another devserver's
    backup is not found here: each has its own repository."""
    if env.backup_repository is None:
        raise NotFound(f"{env.name} has no backups yet: `leeward backup now {env.name}` makes one.")
    if backup_id is None:
        row = await latest(session, env.backup_repository, BackupState.SUCCEEDED)
        if row is None:
            raise NotFound(f"{env.name} has no successful backup yet.")
        return row
    row = await session.get(BackupRow, backup_id)
    if row is None or row.repository_id != env.backup_repository or row.forgotten_at is not None:
        raise NotFound(
            f"{env.name} has no backup {backup_id}: `leeward backup list {env.name}` shows its "
            "backups."
        )
    if row.state != BackupState.SUCCEEDED or row.snapshot is None:
        raise Conflict(f"Backup {backup_id} of {env.name} is {row.state}: it has no snapshot.")
    return row


async def list_backups(fleet: Fleet, who: Principal, ref: str) -> BackupList:
    async with fleet.store.read() as session:
        env = await find_backed_up(session, who, ref)
        repo = (
            await session.get(BackupRepositoryRow, env.backup_repository)
            if env.backup_repository
            else None
        )
        rows: list[BackupRow] = []
        if repo is not None:
            rows = list(
                (
                    await session.execute(
                        select(BackupRow)
                        .where(BackupRow.repository_id == repo.id, BackupRow.forgotten_at.is_(None))
                        .order_by(BackupRow.id.desc())
                        .limit(SHOWN)
                    )
                )
                .scalars()
                .all()
            )
        status = await status_of(fleet, session, env, repo)
    return BackupList(environment=env.name, status=status, backups=[to_backup(r) for r in rows])


async def show_backup(
    fleet: Fleet, who: Principal, ref: str, backup_id: int, path: str
) -> BackupDetail:
    async with fleet.store.read() as session:
        env = await find_backed_up(session, who, ref)
        row = await find_backup(session, env, backup_id)
        repo = await session.get(BackupRepositoryRow, row.repository_id)
    assert repo is not None and row.snapshot is not None
    try:
        entries = await restic.entries(engine_repository(repo), row.snapshot, path)
    except restic.ResticError as exc:
        raise NotFound(
            f"Backup {backup_id} of {env.name} has no directory {path!r}: {exc}"
        ) from None
    return BackupDetail(
        backup=to_backup(row),
        path=path,
        entries=[
            BackupEntry(
                path=e.path,
                type=e.type,
                size=e.size,
                mode=e.mode,
                modified_at=e.mtime,
                target=e.target,
            )
            for e in entries
        ],
    )


async def set_schedule(fleet: Fleet, who: Principal, ref: str, minutes: int | None) -> BackupStatus:
    async with fleet.store.write() as session:
        env = await find_environment(session, who, ref)
        check_backed_up(env)
        repo = await repository_of(fleet, session, env)
        repo.interval_seconds = None if minutes is None else minutes * 60
        await refresh_status(fleet, session, env)
        return await status_of(fleet, session, env, repo)
