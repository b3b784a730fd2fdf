"""Idle stop: a container or temporary devserver that nothing kept alive for its kind's time
(`[idle]`; what keeps one alive: leeward.fleet.activity) is stopped with its home kept on its
host, and its owner told; its next connection (`leeward proxy`) or `leeward start` starts it
again there, with the same home, name and address. One stopped for longer than its policy's
dormancy is deleted, with notice first, and a devserver's home backed up one last time.

A stopped environment keeps its capacity and its address (its host holds its home), so that
starting it again never waits for room. Only a heartbeat that came after its stop time, and
found nothing alive, lets it stop: an agent whose heartbeats are late (a fleet that was down, a
clock moved on) is never stopped on old news."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from leeward.fleet.activity import policy, stop_at
from leeward.fleet.auth import Principal
from leeward.fleet.backups import back_up_and_wait
from leeward.fleet.errors import Conflict, FleetError
from leeward.fleet.lifecycle import teardown
from leeward.fleet.notify.outbox import notify
from leeward.fleet.ownership import find_environment
from leeward.fleet.provision import provision
from leeward.fleet.resources import to_resource, update_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow
from leeward.providers.base import ProviderError
from leeward_protocol.backup import BackupState, BackupTrigger
from leeward_protocol.fleet import Environment, EnvironmentKind, EnvironmentState
from leeward_protocol.notify import NotificationKind

log = logging.getLogger(__name__)

BACKUP_RETRY = timedelta(minutes=30)
"""A dormant devserver whose final backup failed is tried again after this long (not deleted)."""

_STARTABLE = {EnvironmentState.PROVISIONING, EnvironmentState.RUNNING, EnvironmentState.MIGRATING}
"""What a start answers as it is: it is starting or up already."""


async def idle_round(fleet: Fleet) -> None:
    """The loop's round (one replica at a time): stop what is idle, delete what is dormant."""
    await stop_idle(fleet)
    await dormancy(fleet)


# ---------------------------------------------------------------------------- stopping


async def stop_idle(fleet: Fleet) -> list[str]:
    """Stop every running environment past its idle stop time that a heartbeat since has
    found idle; returns their ids. Each stop is its environment's work (one at a time)."""
    now = fleet.clock.now()
    async with fleet.store.read() as session:
        rows = (
            (
                await session.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.state == EnvironmentState.RUNNING.value,
                        EnvironmentRow.idle_stop_at <= now,
                        EnvironmentRow.last_seen_at >= EnvironmentRow.idle_stop_at,
                        EnvironmentRow.owner.is_not(None),
                    )
                )
            )
            .scalars()
            .all()
        )
    stopping = []
    for row in rows:
        if fleet.at_work(row.id) is not None:
            continue
        chosen = policy(fleet.config, row.kind, row.lifespan, row.owner)
        if chosen is None or chosen.stop_after_minutes is None:
            continue  # the policy changed since its stop time was set
        stopping.append(row.id)
        fleet.spawn(row.id, suspend(fleet, row.id, row.idle_stop_at))
    return stopping


async def suspend(fleet: Fleet, env_id: str, due: datetime | None) -> None:
    """Stop one idle environment (its agent and sandbox; its home stays on its host), then
    mark it stopped and tell its owner, in one transaction. A failed stop leaves it running:
    the next round tries again."""
    async with fleet.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
    # A heartbeat since it was chosen may have found it in use: then it stays.
    if row is None or row.state != EnvironmentState.RUNNING or row.idle_stop_at != due:
        return
    try:
        await fleet.provider.suspend(env_id)
    except ProviderError as exc:
        log.warning("stopping idle %s (%s) failed: %s", env_id, row.name, exc)
        await update_environment(
            fleet.store,
            fleet.clock,
            env_id,
            expect={EnvironmentState.RUNNING.value},
            status_message=f"stopping it for being idle failed ({exc}); tried again soon",
        )
        return
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await session.get(EnvironmentRow, env_id)
        if row is None or row.state != EnvironmentState.RUNNING:
            return  # deleted meanwhile: the delete waits for this work, then tears it down
        chosen = policy(fleet.config, row.kind, row.lifespan, row.owner)
        days = chosen.delete_after_days if chosen is not None else None
        idle_for = _span(now - row.active_at) if row.active_at is not None else "a while"
        row.state = EnvironmentState.STOPPED.value
        row.status_message = f"stopped for being idle ({idle_for}); its home is kept"
        row.stopped_at, row.updated_at = now, now
        row.idle_stop_at = None
        row.dormant_delete_at = now + timedelta(days=days) if days is not None else None
        row.agent_token_digest = None  # its agent is gone; a start issues a new identity
        assert row.owner is not None
        await notify(
            session,
            fleet.config,
            now,
            user=row.owner,
            kind=NotificationKind.IDLE_STOP,
            environment=row,
            data={
                "idle_for": idle_for,
                "kept_by": row.kept_by,
                "deletes_at": row.dormant_delete_at,
            },
            key=f"idle-stop:{row.id}:{now.isoformat()}",
        )
    log.info("environment %s (%s) stopped for being idle (%s)", env_id, row.name, idle_for)


def _span(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


# ---------------------------------------------------------------------------- starting again


async def start_again(fleet: Fleet, who: Principal, ref: str) -> tuple[Environment, bool]:
    """Start a stopped environment again on its host, with its home (its owner's, or an
    admin's, call); the resource, and whether this call started it. One that is starting or
    up already is answered as it is (a second connection while the first one woke it)."""
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await find_environment(session, who, ref)
        if row.state in _STARTABLE:
            return to_resource(row, fleet.config.zone), False
        if row.state != EnvironmentState.STOPPED:
            raise Conflict(
                f"{row.name} is {row.state}; only a stopped environment can be started "
                "(`leeward show` says what it is doing)."
            )
        row.state = EnvironmentState.PROVISIONING.value
        row.status_message = "starting again after an idle stop"
        row.stopped_at = row.dormant_delete_at = None
        row.active_at, row.kept_by = now, "its start"
        row.idle_stop_at = stop_at(fleet.config, row.kind, row.lifespan, row.owner, now)
        row.updated_at = now
        # Leased to this replica with the change: no other replica's recovery takes the
        # start for an orphan's.
        tickets = await fleet.leases.grant(session, [f"env:{row.id}"])
    log.info("environment %s (%s) starts again after an idle stop", row.id, row.name)
    fleet.spawn(row.id, provision(fleet, row.id), granted=tickets[f"env:{row.id}"])
    return to_resource(row, fleet.config.zone), True


# ---------------------------------------------------------------------------- dormancy


async def dormancy(fleet: Fleet) -> list[str]:
    """Stopped environments due for deletion: told first (`notice_hours` ahead, once), then
    deleted (a devserver after a last backup). Returns the ids whose deletion began."""
    now = fleet.clock.now()
    async with fleet.store.read() as session:
        rows = (
            (
                await session.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.state == EnvironmentState.STOPPED.value,
                        EnvironmentRow.dormant_delete_at.is_not(None),
                    )
                )
            )
            .scalars()
            .all()
        )
    deleting = []
    for row in rows:
        if fleet.at_work(row.id) is not None:
            continue
        chosen = policy(fleet.config, row.kind, row.lifespan, row.owner)
        notice = timedelta(hours=chosen.notice_hours if chosen is not None else 24.0)
        assert row.dormant_delete_at is not None
        if now < row.dormant_delete_at - notice:
            continue
        if not await _told(fleet, row.id, notice, now):
            continue  # told just now: the delete comes after the whole notice
        if now >= row.dormant_delete_at:
            deleting.append(row.id)
            fleet.spawn(row.id, delete_dormant(fleet, row.id))
    return deleting


async def _told(fleet: Fleet, env_id: str, notice: timedelta, now: datetime) -> bool:
    """Tell the owner of a dormant environment it is to be deleted (once per stop), pushing the
    deletion back so that they have the whole notice when it comes late (a fleet that was
    down). True when they had been told already (the deletion may go ahead when due)."""
    async with fleet.store.write() as session:
        row = await session.get(EnvironmentRow, env_id)
        if row is None or row.state != EnvironmentState.STOPPED or row.dormant_delete_at is None:
            return False
        assert row.owner is not None and row.stopped_at is not None
        told = await notify(
            session,
            fleet.config,
            now,
            user=row.owner,
            kind=NotificationKind.DORMANT_DELETE,
            environment=row,
            data={"deletes_at": max(row.dormant_delete_at, now + notice)},
            key=f"dormant:{row.id}:{row.stopped_at.isoformat()}",
        )
        if told is None:
            return True
        if row.dormant_delete_at < now + notice:
            row.dormant_delete_at = now + notice
            row.updated_at = now
        log.info(
            "environment %s (%s): dormant, deleted at %s", row.id, row.name, row.dormant_delete_at
        )
        return False


async def delete_dormant(fleet: Fleet, env_id: str) -> None:
    """Delete a dormant environment: a devserver's home is backed up first (where backups are
    on), and if that fails it is kept, and tried again after `BACKUP_RETRY`."""
    async with fleet.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
    if row is None or row.state != EnvironmentState.STOPPED:
        return
    if row.kind == EnvironmentKind.DEVSERVER and fleet.config.backup.enabled:
        try:
            done = await back_up_and_wait(fleet, env_id, BackupTrigger.DELETE)
            failure = done.message if done.state != BackupState.SUCCEEDED else None
        except FleetError as exc:
            failure = exc.message
        if failure is not None:
            retry = fleet.clock.now() + BACKUP_RETRY
            log.warning("dormant %s (%s): its last backup failed: %s", env_id, row.name, failure)
            await update_environment(
                fleet.store,
                fleet.clock,
                env_id,
                expect={EnvironmentState.STOPPED.value},
                status_message=f"dormant: its last backup failed ({failure}); it is kept, and "
                f"tried again at {retry:%H:%M} UTC",
                dormant_delete_at=retry,
            )
            return
    now = fleet.clock.now()
    if not await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        expect={EnvironmentState.STOPPED.value},
        state=EnvironmentState.DELETING.value,
        status_message="deleted after its idle stop: dormant for too long",
    ):
        return  # started again meanwhile
    log.info("environment %s (%s) deleted for dormancy (stopped %s)", env_id, row.name, now)
    await teardown(fleet, env_id)
