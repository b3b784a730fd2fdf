"""Decommissions (the decominator): a host emptied before a deadline, then retired for good.

`leeward admin host decommission HOST --by DATE` closes the host to new placements and tells
each owner (an event, and a line in `leeward show`: its status). Then, in rounds of a loop that
runs in one replica at a time and reads everything it needs from the store (so a fleet restart
simply goes on): each devserver moves live to another host of its region where there is room,
otherwise cold (a final backup, restored on a host with room: leeward.fleet.moves); warm
containers go at once; a container whose expiry is after the deadline expires at it (its owner
is told). Once nothing lives on the host any more, it is retired.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet import announcements, migration, moves
from leeward.fleet.auth import Principal
from leeward.fleet.errors import Conflict, FleetError, Invalid
from leeward.fleet.hosts import in_service, list_hosts
from leeward.fleet.idle import start_again
from leeward.fleet.lifecycle import teardown
from leeward.fleet.notify.outbox import notify
from leeward.fleet.placement import LIVE
from leeward.fleet.resources import to_resource
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow, HostRow, MoveRow
from leeward_protocol.backup import DecommissionHost, HostDetail, MoveRequest, MoveState
from leeward_protocol.fleet import EnvironmentKind, EnvironmentState, Host, HostState, Role
from leeward_protocol.notify import (
    ActionKind,
    ActionRequest,
    NotificationKind,
    PostAnnouncement,
    Severity,
)

log = logging.getLogger(__name__)

COORDINATOR = Principal(user="fleet decominator", role=Role.ADMIN)


async def decommission(fleet: Fleet, name: str, request: DecommissionHost) -> HostDetail:
    now = fleet.clock.now()
    by = request.by
    if by.tzinfo is None:
        raise Invalid(
            "Give the deadline with its time zone (e.g. 2026-12-24T18:00:00Z).", field="by"
        )
    if by <= now:
        raise Invalid("The deadline must be in the future.", field="by")
    when = by.strftime("%Y-%m-%d %H:%M UTC")
    async with fleet.store.write() as session:
        host = await in_service(session, name)
        host.state, host.decommission_by = HostState.DECOMMISSIONING.value, by
        rows = await _living_on(session, name)
        reason = f" ({request.reason})" if request.reason else ""
        for env in rows:
            if env.owner is None:
                continue
            if env.kind == EnvironmentKind.DEVSERVER:
                env.status_message = (
                    f"its host {name} is retired by {when}{reason}: it moves to another host "
                    f"before then, with its files (or move it yourself: `leeward move {env.name}`)"
                )
            else:
                if env.expires_at is None or env.expires_at > by:
                    env.expires_at = by
                env.status_message = f"its host {name} is retired{reason}: it expires at {when}"
            env.updated_at = now
            await notify(
                session,
                fleet.config,
                now,
                user=env.owner,
                kind=NotificationKind.DECOMMISSION,
                environment=env,
                data={
                    "host": name,
                    "when": by,
                    "reason": request.reason or "",
                    "container": env.kind != EnvironmentKind.DEVSERVER,
                },
                # Once per host, environment and deadline: a new deadline is news again.
                key=f"decommission:{name}:{env.id}:{by.isoformat()}",
            )
        await _announce(session, fleet, name, when, reason, by)
    log.info("host %s: decommission by %s", name, when)
    return await detail(fleet, name)


async def _announce(
    session: AsyncSession, fleet: Fleet, name: str, when: str, reason: str, by: datetime
) -> None:
    """The banner of a decommission, to the owners of what lives on the host until its
    deadline; a new deadline replaces the old banner. Withdrawn when the host is retired or
    its decommission is cancelled (leeward.fleet.hosts.set_host_state)."""
    now = fleet.clock.now()
    source = f"decommission:{name}"
    await announcements.withdraw_source(session, now, source)
    post = PostAnnouncement(
        text=f"Host {name} is retired by {when}{reason}. Devservers on it move to another host "
        "before then, with their files (their processes stop); containers on it expire then. "
        "Move a devserver yourself now, when it suits you: `leeward move NAME`.",
        severity=Severity.WARNING,
        hosts=[name],
        ends_at=by,
        actions=[ActionRequest(kind=ActionKind.MOVE, label="Move my devserver now")],
    )
    await announcements.post(session, fleet.config, now, COORDINATOR.user, post, source=source)


async def detail(fleet: Fleet, name: str) -> HostDetail:
    usage = next((h for h in await list_hosts(fleet.store) if h.name == name), None)
    async with fleet.store.read() as session:
        host = await session.get(HostRow, name)
        if usage is None or host is None:
            await in_service(session, name)  # the 404 with its sentence
            raise Conflict(f"Host {name} is not in service.")
        envs = await _living_on(session, name)
        made = (
            (
                await session.execute(
                    select(MoveRow)
                    .where(MoveRow.trigger == f"decommission:{name}")
                    .order_by(MoveRow.started_at.desc())
                )
            )
            .scalars()
            .all()
        )
        names = {
            e.id: e.name
            for e in (
                await session.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.id.in_([m.environment_id for m in made])
                    )
                )
            ).scalars()
        }
    return HostDetail(
        host=Host(**vars(usage)),
        decommission_by=host.decommission_by,
        environments=[to_resource(e, fleet.config.zone) for e in envs if e.owner is not None],
        moves=[moves.to_move(m, names.get(m.environment_id, "")) for m in made],
    )


async def _living_on(session: AsyncSession, name: str) -> list[EnvironmentRow]:
    query = select(EnvironmentRow).where(
        EnvironmentRow.host == name, EnvironmentRow.state.in_(LIVE)
    )
    return list((await session.execute(query.order_by(EnvironmentRow.created_at))).scalars())


async def decommissions(fleet: Fleet) -> None:
    """One round for every decommissioning host (the loop `decommissions`)."""
    async with fleet.store.read() as session:
        names = (
            (
                await session.execute(
                    select(HostRow.name).where(HostRow.state == HostState.DECOMMISSIONING.value)
                )
            )
            .scalars()
            .all()
        )
    for name in names:
        try:
            await _round(fleet, name)
        except FleetError as exc:
            log.warning("decommission of %s: %s", name, exc.message)


async def _round(fleet: Fleet, name: str) -> None:
    now = fleet.clock.now()
    async with fleet.store.read() as session:
        host = await session.get(HostRow, name)
        assert host is not None
        rows = await _living_on(session, name)
        moving = set(
            (
                await session.execute(
                    select(MoveRow.environment_id).where(
                        MoveRow.state == MoveState.RUNNING.value,
                        MoveRow.environment_id.in_([r.id for r in rows]),
                    )
                )
            )
            .scalars()
            .all()
        )
    for env in rows:
        if env.id in moving or fleet.at_work(env.id) is not None:
            continue
        if env.state == EnvironmentState.WARM:
            await _delete(fleet, env.id, "its host is being retired")
        elif env.kind == EnvironmentKind.CONTAINER:
            if host.decommission_by is not None and now >= host.decommission_by:
                await _delete(fleet, env.id, f"its host {name} was retired")
        elif env.state == EnvironmentState.RUNNING:
            await _move_off(fleet, env, name)
        elif env.state == EnvironmentState.STOPPED:
            # Stopped for being idle: started again, it moves off in a later round.
            await start_again(fleet, COORDINATOR, env.id)
    if not rows:
        async with fleet.store.write() as session:
            row = await session.get(HostRow, name)
            if row is not None and row.state == HostState.DECOMMISSIONING:
                row.state = HostState.RETIRED.value
                await announcements.withdraw_source(session, now, f"decommission:{name}")
        log.info("host %s is retired: nothing runs on it any more", name)


async def _move_off(fleet: Fleet, env: EnvironmentRow, name: str) -> None:
    """Live, within its region, where there is room; otherwise cold, wherever there is."""
    try:
        await migration.migrate(fleet, COORDINATOR, env.id)
        log.info("decommission of %s: %s moves live", name, env.name)
        return
    except FleetError as exc:
        log.info("decommission of %s: %s cannot move live (%s); cold", name, env.name, exc.message)
    request = MoveRequest(flavor=env.flavor)
    try:
        await moves.start_move(fleet, COORDINATOR, env.id, request, trigger=f"decommission:{name}")
    except FleetError as exc:
        log.warning("decommission of %s: %s cannot move: %s", name, env.name, exc.message)


async def _delete(fleet: Fleet, env_id: str, why: str) -> None:
    async with fleet.store.write() as session:
        env = await session.get(EnvironmentRow, env_id)
        if env is None or env.state not in LIVE or env.state == EnvironmentState.DELETING:
            return
        env.state, env.status_message = EnvironmentState.DELETING.value, why
        env.updated_at = fleet.clock.now()
    fleet.spawn(env_id, teardown(fleet, env_id))
