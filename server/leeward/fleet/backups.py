"""Backups of devservers' homes: each devserver's restic repository and key, the runs (on a
schedule, before risky operations, on request), retention, and what a devserver's backups look
like to its owner and to operators.

The fleet holds each repository's key and hands it to the host for one run: the host runs
restic where the home is (leeward.providers.restic); the fleet runs what concerns the
repository alone (listing a snapshot, forget and prune). A run is a row in `backups` from its
start; a run a stopped fleet or host left half done is marked failed once nobody holds it, and
restic's repository stays sound (a killed backup leaves only unreferenced data, which the next
prune removes).

Backups of one repository run one at a time, under the lease `backup:REPOSITORY`; a prune runs
under `prune:REPOSITORY` and is cancelled by a backup asked for meanwhile in the same replica,
so that a long prune never delays a backup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.auth import Principal
from leeward.fleet.errors import Conflict, Invalid, NotFound
from leeward.fleet.notify.outbox import notify
from leeward.fleet.ownership import find_environment
from leeward.fleet.resources import new_environment_id, update_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import BackupRepositoryRow, BackupRow, EnvironmentRow
from leeward.providers import restic
from leeward.providers.base import HostUnreachable, ProviderError
from leeward_protocol.backup import (
    Backup,
    BackupState,
    BackupTrigger,
)
from leeward_protocol.fleet import BackupStatus, EnvironmentKind, EnvironmentState
from leeward_protocol.host import BackupOrder, BackupProgress, BackupRepository, RestoreOrder
from leeward_protocol.notify import NotificationKind

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0
"""How often a running backup's progress is written to the store."""


# ---------------------------------------------------------------------------- repositories


def new_repository(fleet: Fleet, owner: str, now: datetime) -> BackupRepositoryRow:
    repo_id = "r-" + new_environment_id()[2:]
    return BackupRepositoryRow(
        id=repo_id,
        owner=owner,
        location=f"{fleet.config.backup_store}/{repo_id}",
        password=secrets.token_urlsafe(32),
        created_at=now,
    )


async def repository_of(
    fleet: Fleet, session: AsyncSession, row: EnvironmentRow
) -> BackupRepositoryRow:
    """The devserver's repository, made on its first backup."""
    if row.backup_repository is not None:
        repo = await session.get(BackupRepositoryRow, row.backup_repository)
        assert repo is not None
        return repo
    assert row.owner is not None
    repo = new_repository(fleet, row.owner, fleet.clock.now())
    session.add(repo)
    await session.flush()
    row.backup_repository = repo.id
    return repo


def wire(repo: BackupRepositoryRow) -> BackupRepository:
    return BackupRepository(id=repo.id, location=repo.location, password=repo.password)


def engine_repository(repo: BackupRepositoryRow) -> restic.Repository:
    """The repository as the fleet itself opens it (listing, forget and prune)."""
    return restic.Repository(repo.location, repo.password)


def interval(fleet: Fleet, repo: BackupRepositoryRow | None) -> timedelta:
    seconds = repo.interval_seconds if repo is not None else None
    return timedelta(seconds=seconds or fleet.config.backup.interval_minutes * 60)


# ---------------------------------------------------------------------------- resources


def to_backup(row: BackupRow) -> Backup:
    return Backup(
        id=row.id,
        environment=row.environment_name,
        environment_id=row.environment_id,
        state=BackupState(row.state),
        trigger=BackupTrigger(row.trigger),
        message=row.message,
        snapshot=row.snapshot[:8] if row.snapshot else None,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=row.progress,
        files_new=row.files_new,
        files_changed=row.files_changed,
        files_unmodified=row.files_unmodified,
        total_files=row.total_files,
        total_bytes=row.total_bytes,
        data_added=row.data_added,
        seconds=row.seconds,
        warnings=json.loads(row.warnings),
    )


async def status_of(
    fleet: Fleet, session: AsyncSession, env: EnvironmentRow, repo: BackupRepositoryRow | None
) -> BackupStatus:
    """The devserver's backups at a glance, as its row keeps them (`backup_status`)."""
    every = interval(fleet, repo)
    last_ok = last = None
    if repo is not None:
        last_ok = await latest(session, repo.id, BackupState.SUCCEEDED)
        last = await _last_run(session, repo)
    now = fleet.clock.now()
    since = last_ok.finished_at if last_ok is not None else env.ready_at or env.created_at
    assert since is not None
    failed = last is not None and last.state == BackupState.FAILED
    return BackupStatus(
        last_success_at=last_ok.finished_at if last_ok is not None else None,
        last_backup=last_ok.id if last_ok is not None else None,
        interval_minutes=int(every.total_seconds() // 60),
        running=last is not None and last.state == BackupState.RUNNING,
        overdue=now - since > 2 * every,
        message=last.message if failed and last is not None else "",
    )


async def latest(session: AsyncSession, repo_id: str, state: BackupState) -> BackupRow | None:
    return await session.scalar(
        select(BackupRow)
        .where(
            BackupRow.repository_id == repo_id,
            BackupRow.state == state.value,
            BackupRow.forgotten_at.is_(None),
        )
        .order_by(BackupRow.id.desc())
        .limit(1)
    )


async def refresh_status(fleet: Fleet, session: AsyncSession, env: EnvironmentRow) -> None:
    """Write the devserver's `backup_status` (an event when it changed)."""
    repo = (
        await session.get(BackupRepositoryRow, env.backup_repository)
        if env.backup_repository
        else None
    )
    status = (await status_of(fleet, session, env, repo)).model_dump_json(by_alias=True)
    if status != env.backup_status:
        env.backup_status = status
        env.updated_at = fleet.clock.now()


def check_backed_up(env: EnvironmentRow) -> None:
    if env.kind != EnvironmentKind.DEVSERVER:
        raise Invalid(f"{env.name} is a container: only devservers are backed up.")


# ---------------------------------------------------------------------------- runs


async def back_up(
    fleet: Fleet, who: Principal, ref: str, trigger: BackupTrigger = BackupTrigger.REQUEST
) -> Backup:
    """Start a backup of a running devserver now (or answer the one already running)."""
    if not fleet.config.backup.enabled:
        raise Conflict("Backups are off in this fleet's config (backup.enabled).")
    async with fleet.store.write() as session:
        env = await find_environment(session, who, ref)
        row, _ = await _begin(fleet, session, env, trigger)
    await _start(fleet, row)
    return to_backup(row)


INTERRUPTED = (
    "Interrupted: the fleet or the host stopped during it; the next one starts on schedule."
)
"""The message of a backup whose run stopped with its fleet or host (recovery's verdict)."""

INTERRUPTED_TRIES = 3
"""How many backups a risky operation takes before it gives up on ones cut short by a stop."""


async def back_up_and_wait(fleet: Fleet, env_id: str, trigger: BackupTrigger) -> BackupRow:
    """A backup before a risky operation: started (or the running one joined), then waited
    for. Returns its final row (its state says whether it succeeded). One cut short by a stop
    of the fleet or the host (a move resumed after a restart joins the run its fleet left
    behind, which recovery then ends as interrupted) is taken again, up to INTERRUPTED_TRIES."""
    for _ in range(INTERRUPTED_TRIES):
        done = await _back_up_once(fleet, env_id, trigger)
        if done.state != BackupState.FAILED or done.message != INTERRUPTED:
            return done
        log.info("backup %s of %s was interrupted: taking another", done.id, env_id)
    return done


async def _back_up_once(fleet: Fleet, env_id: str, trigger: BackupTrigger) -> BackupRow:
    async with fleet.store.write() as session:
        env = await session.get(EnvironmentRow, env_id)
        if env is None:
            raise NotFound(f"No environment {env_id!r}.")
        row, _ = await _begin(fleet, session, env, trigger)
    await _start(fleet, row)
    key = f"backup:{row.repository_id}"
    while (task := fleet.at_work(key)) is not None:
        await _wait(task)
    async with fleet.store.read() as session:
        done = await session.get(BackupRow, row.id)
    assert done is not None
    if done.state == BackupState.RUNNING:
        # Another replica runs it: poll the store.
        while done.state == BackupState.RUNNING:
            await fleet.clock.sleep(1.0)
            async with fleet.store.read() as session:
                done = await session.get(BackupRow, row.id)
            assert done is not None
    return done


async def _wait(task: asyncio.Task[None]) -> None:
    await asyncio.gather(task, return_exceptions=True)


async def _begin(
    fleet: Fleet, session: AsyncSession, env: EnvironmentRow, trigger: BackupTrigger
) -> tuple[BackupRow, bool]:
    """A new run's row (and True), or the run of the devserver's repository already going."""
    check_backed_up(env)
    # A stopped one (idle stop) too: its home is on its host, as still as it gets.
    if env.state not in (EnvironmentState.RUNNING, EnvironmentState.STOPPED):
        raise Conflict(
            f"{env.name} is {env.state}; only a running or stopped devserver is backed up."
        )
    repo = await repository_of(fleet, session, env)
    running = await latest(session, repo.id, BackupState.RUNNING)
    if running is not None:
        return running, False
    now = fleet.clock.now()
    row = BackupRow(
        repository_id=repo.id,
        environment_id=env.id,
        environment_name=env.name,
        state=BackupState.RUNNING.value,
        trigger=trigger.value,
        message="",
        started_at=now,
        progress=0.0,
        files_new=0,
        files_changed=0,
        files_unmodified=0,
        total_files=0,
        total_bytes=0,
        data_added=0,
        seconds=0.0,
        warnings="[]",
    )
    session.add(row)
    await session.flush()
    await refresh_status(fleet, session, env)
    return row, True


async def _start(fleet: Fleet, row: BackupRow) -> None:
    key = f"backup:{row.repository_id}"
    if fleet.at_work(key) is not None:
        return  # this run (or the one before it) is at work here already
    pruning = fleet.at_work(f"prune:{row.repository_id}")
    if pruning is not None:
        log.info("backup of %s: the prune of its repository gives way", row.environment_name)
        pruning.cancel()
        await _wait(pruning)
    fleet.spawn(key, _run(fleet, row.id))


async def _run(fleet: Fleet, backup_id: int) -> None:
    async with fleet.store.read() as session:
        row = await session.get(BackupRow, backup_id)
        if row is None or row.state != BackupState.RUNNING:
            return
        repo = await session.get(BackupRepositoryRow, row.repository_id)
        env = await session.get(EnvironmentRow, row.environment_id)
        parent = await latest(session, row.repository_id, BackupState.SUCCEEDED)
    assert repo is not None and env is not None
    order = BackupOrder(
        repository=wire(repo),
        host=env.name,
        tags=[row.trigger, env.id],
        excludes=[*fleet.config.backup.excludes, *await _user_excludes(fleet, env.owner)],
        parent=parent.snapshot if parent is not None else None,
    )
    last_write = fleet.clock.monotonic()

    def progress(p: BackupProgress) -> None:
        nonlocal last_write
        if fleet.clock.monotonic() - last_write >= PROGRESS_SECONDS:
            last_write = fleet.clock.monotonic()
            fleet.start_task(_progress(fleet, backup_id, p.percent), f"progress:{backup_id}")

    started = fleet.clock.monotonic()
    try:
        result = await fleet.provider.backup(env.id, order, progress)
    except HostUnreachable as exc:
        await _finish(fleet, backup_id, state=BackupState.FAILED, message=f"Its host: {exc}")
        return
    except ProviderError as exc:
        await _finish(fleet, backup_id, state=BackupState.FAILED, message=str(exc))
        return
    except Exception:
        await _finish(
            fleet,
            backup_id,
            state=BackupState.FAILED,
            message="The fleet failed while running it (its log says why); try again.",
        )
        raise
    await _finish(
        fleet,
        backup_id,
        state=BackupState.SUCCEEDED,
        message="; ".join(result.warnings[:3]),
        snapshot=result.snapshot,
        progress=1.0,
        files_new=result.files_new,
        files_changed=result.files_changed,
        files_unmodified=result.files_unmodified,
        total_files=result.total_files,
        total_bytes=result.total_bytes,
        data_added=result.data_added,
        seconds=result.seconds,
        warnings=json.dumps(result.warnings[:100]),
    )
    log.info(
        "backup %d of %s: %d files, %d bytes added, %.1f s",
        backup_id,
        env.name,
        result.total_files,
        result.data_added,
        fleet.clock.monotonic() - started,
    )
    await _maybe_prune(fleet, repo.id)


async def _progress(fleet: Fleet, backup_id: int, percent: float) -> None:
    async with fleet.store.write() as session:
        await session.execute(
            update(BackupRow)
            .where(BackupRow.id == backup_id, BackupRow.state == BackupState.RUNNING.value)
            .values(progress=min(max(percent, 0.0), 1.0))
        )


async def _finish(fleet: Fleet, backup_id: int, *, state: BackupState, **fields: Any) -> None:
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await session.get(BackupRow, backup_id)
        if row is None or row.state != BackupState.RUNNING:
            return
        row.state, row.finished_at = state.value, now
        for name, value in fields.items():
            setattr(row, name, value)
        env = await session.get(EnvironmentRow, row.environment_id)
        if env is not None:
            if state is BackupState.SUCCEEDED:
                env.backup_at = now
            await session.flush()
            await refresh_status(fleet, session, env)
            if state is BackupState.FAILED and env.owner is not None:
                await _tell_failed(fleet, session, env, row)
    if state is BackupState.FAILED:
        log.warning("backup %d failed: %s", backup_id, fields.get("message"))


async def _tell_failed(
    fleet: Fleet, session: AsyncSession, env: EnvironmentRow, row: BackupRow
) -> None:
    """Tell the owner, once per streak of failures: the key is the last success before it, so
    the scheduler's retries of a failing backup do not tell them again, and the first failure
    after a success does."""
    assert env.owner is not None
    last_success = await session.scalar(
        select(func.max(BackupRow.id)).where(
            BackupRow.repository_id == row.repository_id,
            BackupRow.state == BackupState.SUCCEEDED.value,
        )
    )
    await notify(
        session,
        fleet.config,
        fleet.clock.now(),
        user=env.owner,
        kind=NotificationKind.BACKUP_FAILED,
        environment=env,
        data={"reason": row.message or "no reason was given", "backup": row.id},
        key=f"backup-failed:{row.repository_id}:after:{last_success or 0}",
    )


async def _user_excludes(fleet: Fleet, owner: str | None) -> list[str]:
    """The owner's `[backup] exclude` (their config.toml, as their profile keeps it)."""
    if owner is None:
        return []
    config = await fleet.profiles.user_config(owner)
    return list(config.backup.exclude) if config is not None else []


# ---------------------------------------------------------------------------- retention


async def _maybe_prune(fleet: Fleet, repo_id: str) -> None:
    async with fleet.store.read() as session:
        repo = await session.get(BackupRepositoryRow, repo_id)
    assert repo is not None
    every = timedelta(hours=fleet.config.backup.prune_hours)
    if repo.pruned_at is not None and fleet.clock.now() - repo.pruned_at < every:
        return
    fleet.spawn(f"prune:{repo_id}", _prune(fleet, repo_id))


async def _prune(fleet: Fleet, repo_id: str) -> None:
    await prune(fleet, repo_id)


async def prune(fleet: Fleet, repo_id: str) -> list[str]:
    """Forget the snapshots the fleet's retention does not keep, and prune their data; the
    backups of forgotten snapshots are marked so (no longer listed). Returns their ids."""
    async with fleet.store.read() as session:
        repo = await session.get(BackupRepositoryRow, repo_id)
    assert repo is not None
    keep = fleet.config.backup.retention
    retention = restic.Retention(
        last=keep.keep_last, hourly=keep.keep_hourly, daily=keep.keep_daily, weekly=keep.keep_weekly
    )
    try:
        forgotten = await restic.forget(engine_repository(repo), retention, prune=True)
    except restic.ResticError as exc:
        log.warning("retention of %s failed: %s", repo_id, exc)
        return []
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        if forgotten:
            for snapshot in forgotten:
                await session.execute(
                    update(BackupRow)
                    .where(
                        BackupRow.repository_id == repo_id,
                        BackupRow.snapshot.startswith(snapshot[:8]),
                    )
                    .values(forgotten_at=now)
                )
        await session.execute(
            update(BackupRepositoryRow)
            .where(BackupRepositoryRow.id == repo_id)
            .values(pruned_at=now)
        )
    log.info("retention of %s: %d snapshot(s) forgotten", repo_id, len(forgotten))
    return forgotten


# ---------------------------------------------------------------------------- the schedule


async def scheduled(fleet: Fleet) -> int:
    """The scheduler's round: runs left half done by a stopped replica or host are marked
    failed, due backups start (up to `backup.parallel` at once), and each devserver's status
    (overdue or not) is brought up to date. Returns how many it started."""
    if not fleet.config.backup.enabled:
        return 0
    await _interrupted(fleet)
    now = fleet.clock.now()
    started = 0
    async with fleet.store.write() as session:
        running = await session.scalar(
            select(func.count()).where(BackupRow.state == BackupState.RUNNING.value)
        )
        room = fleet.config.backup.parallel - int(running or 0)
        envs = (
            (
                await session.execute(
                    select(EnvironmentRow)
                    .where(
                        EnvironmentRow.kind == EnvironmentKind.DEVSERVER.value,
                        EnvironmentRow.state == EnvironmentState.RUNNING.value,
                        EnvironmentRow.owner.is_not(None),
                    )
                    .order_by(EnvironmentRow.backup_at.is_not(None), EnvironmentRow.backup_at)
                )
            )
            .scalars()
            .all()
        )
        begun: list[BackupRow] = []
        for env in envs:
            repo = (
                await session.get(BackupRepositoryRow, env.backup_repository)
                if env.backup_repository
                else None
            )
            if due(fleet, env, repo, await _last_run(session, repo), now) and room > 0:
                row, new = await _begin(fleet, session, env, BackupTrigger.SCHEDULE)
                if new:
                    begun.append(row)
                    room -= 1
            else:
                await refresh_status(fleet, session, env)
    for row in begun:
        await _start(fleet, row)
        started += 1
    return started


RETRY_FRACTION = 4
"""A failed backup is tried again after a quarter of its interval (at least a minute)."""


def due(
    fleet: Fleet,
    env: EnvironmentRow,
    repo: BackupRepositoryRow | None,
    last: BackupRow | None,
    now: datetime,
) -> bool:
    """Whether a devserver's next scheduled backup is due: its interval since the last
    success, and (after a failure) a quarter of it since that try, so that a failing store is
    not hammered."""
    every = interval(fleet, repo)
    if env.backup_at is not None and now - env.backup_at < every:
        return False
    if last is not None and last.state == BackupState.FAILED:
        return now - last.started_at >= max(every / RETRY_FRACTION, timedelta(minutes=1))
    return True


async def _last_run(session: AsyncSession, repo: BackupRepositoryRow | None) -> BackupRow | None:
    if repo is None:
        return None
    return await session.scalar(
        select(BackupRow)
        .where(BackupRow.repository_id == repo.id)
        .order_by(BackupRow.id.desc())
        .limit(1)
    )


async def _interrupted(fleet: Fleet) -> None:
    """Runs marked running that nobody runs any more (their replica or host stopped): failed,
    with the reason. restic's repository stays sound; the next run clears restic's stale lock."""
    # A run only just begun may not hold its lease yet: its starter has a lease's time.
    begun_before = fleet.clock.now() - timedelta(seconds=fleet.config.lease_seconds)
    async with fleet.store.read() as session:
        found = await session.execute(
            select(BackupRow.id, BackupRow.repository_id).where(
                BackupRow.state == BackupState.RUNNING.value,
                BackupRow.started_at < begun_before,
            )
        )
        rows = [(i, r) for i, r in found.all() if fleet.at_work(f"backup:{r}") is None]
    held = await fleet.leases.holders(f"backup:{r}" for _, r in rows)
    for backup_id, repo_id in rows:
        if f"backup:{repo_id}" not in held:
            await _finish(
                fleet,
                backup_id,
                state=BackupState.FAILED,
                message=INTERRUPTED,
            )


# ---------------------------------------------------------------------------- restores


async def restore_home(fleet: Fleet, env: EnvironmentRow) -> None:
    """Before a devserver made from a backup first starts: its home, from that backup (on its
    host). ProviderError if it cannot be; HostUnreachable if its host cannot be asked now."""
    async with fleet.store.read() as session:
        backup = await session.get(BackupRow, env.restore_from)
        repo = await session.get(BackupRepositoryRow, backup.repository_id) if backup else None
    if backup is None or repo is None or backup.snapshot is None:
        raise ProviderError(f"backup {env.restore_from} is gone")
    order = RestoreOrder(repository=wire(repo), snapshot=backup.snapshot, owner=env.owner)
    result = await fleet.provider.restore(env.id, order)
    log.info(
        "environment %s: home restored from backup %d (%d files, %d bytes) in %.1f s",
        env.id,
        backup.id,
        result.files,
        result.bytes,
        result.seconds,
    )
    await update_environment(
        fleet.store,
        fleet.clock,
        env.id,
        expect={EnvironmentState.PROVISIONING.value},
        status_message=f"home restored from backup {backup.id} ({result.files} files); starting",
    )
