"""Live migration: moving a running environment to another host of its region while it runs,
and the drain coordinator, which empties a host that way before its maintenance."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from leeward.fleet.auth import Principal
from leeward.fleet.errors import Conflict, FleetError, Invalid, NoCapacity
from leeward.fleet.hosts import set_host_state
from leeward.fleet.ownership import find_environment
from leeward.fleet.placement import LIVE, choose_host, host_usage
from leeward.fleet.resources import to_resource, update_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow, HostRow
from leeward.providers.base import ProviderError
from leeward_protocol.fleet import Environment, EnvironmentState, Hardware, HostState, Role

log = logging.getLogger(__name__)

DRAIN_PARALLEL = 4
"""Environments a drain moves at once."""

DRAIN_TIMEOUT_SECONDS = 3600.0


async def migrate(fleet: Fleet, who: Principal, ref: str, host: str | None = None) -> Environment:
    """Start moving a running environment live to another active host of its region
    (`host`, or the one with the most room). It is answered `migrating`, with `host` the new
    host and `migratingFrom` the old one; the move finishes in the background. Capacity is
    counted on the new host from the start."""
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await find_environment(session, who, ref)
        if row.state != EnvironmentState.RUNNING:
            raise Conflict(f"{row.name} is {row.state}; only a running environment can move.")
        need = Hardware(cpus=row.cpus, memory_gib=row.memory_gib, gpus=row.gpus)
        others = [
            h
            for h in await host_usage(session, lock=True)
            if h.region == row.region and h.name != row.host
        ]
        if host is None:
            target = choose_host(others, need)
            if target is None:
                raise NoCapacity(
                    f"No other active host in {row.region} has room for {row.name}; "
                    "free some, or add a host.",
                    field="host",
                )
        else:
            target = next((h for h in others if h.name == host), None)
            if target is None:
                names = ", ".join(h.name for h in others) or "none"
                raise Invalid(
                    f"{host} is not another host of {row.region} (those are: {names}).",
                    field="host",
                )
            if target.state is not HostState.ACTIVE:
                raise Conflict(f"Host {host} is {target.state}; move {row.name} elsewhere.")
            if target.reachable is False:
                raise Conflict(f"Host {host} is unreachable; move {row.name} elsewhere.")
            if not need.fits_in(target.free):
                raise NoCapacity(f"Host {host} has no room for {row.name}.", field="host")
        source = row.host
        row.migrating_from, row.host = source, target.name
        row.state = EnvironmentState.MIGRATING.value
        row.status_message = f"migrating from {source} to {target.name}"
        row.updated_at = now
    assert source is not None
    fleet.spawn(row.id, _move(fleet, row.id, source, target.name))
    return to_resource(row, fleet.config.zone)


async def _move(fleet: Fleet, env_id: str, source: str, target: str) -> None:
    """The move itself, in the background: the host moves the environment; the fleet records
    where it ended up (back on `source` if the move failed)."""
    started = fleet.clock.monotonic()
    try:
        await fleet.provider.migrate(env_id, target, fleet.config.migration_blackout_seconds)
    except ProviderError as exc:
        log.warning("migrating %s to %s failed: %s", env_id, target, exc)
        await update_environment(
            fleet.store,
            fleet.clock,
            env_id,
            expect={EnvironmentState.MIGRATING.value},
            state=EnvironmentState.RUNNING.value,
            host=source,
            migrating_from=None,
            status_message=f"the move to {target} failed ({exc}); still on {source}",
        )
        return
    await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        expect={EnvironmentState.MIGRATING.value},
        state=EnvironmentState.RUNNING.value,
        migrating_from=None,
        status_message=f"migrated from {source}",
    )
    log.info(
        "environment %s migrated %s -> %s in %.2f s",
        env_id,
        source,
        target,
        fleet.clock.monotonic() - started,
    )


async def finish_move(fleet: Fleet, env_id: str) -> None:
    """Finish a move whose replica stopped in the middle of it (the row still says
    migrating): ask the host again (a move to where it already is only costs a blackout)."""
    async with fleet.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
    if row is None or row.state != EnvironmentState.MIGRATING or not row.migrating_from:
        return
    assert row.host is not None
    await _move(fleet, env_id, row.migrating_from, row.host)


# ---------------------------------------------------------------------------- drains


async def drain_host(fleet: Fleet, name: str) -> None:
    """The drain coordinator's start: no new environments on `name`, and every one on it
    moved live to another active host of its region, then the host is in maintenance."""
    await set_host_state(fleet.store, name, HostState.DRAINING, fleet.clock.now())
    fleet.spawn(f"drain:{name}", _drain(fleet, name))


async def _drain(fleet: Fleet, name: str) -> None:
    admin = Principal(user="fleet drain coordinator", role=Role.ADMIN)
    deadline = fleet.clock.monotonic() + DRAIN_TIMEOUT_SECONDS
    stuck: dict[str, str] = {}
    while True:
        async with fleet.store.read() as session:
            host = await session.get(HostRow, name)
            if host is None or host.state != HostState.DRAINING:
                log.info("drain of %s stopped: the host is %s", name, host and host.state)
                return
            rows = (
                await session.execute(
                    select(EnvironmentRow.id, EnvironmentRow.state).where(
                        EnvironmentRow.host == name, EnvironmentRow.state.in_(LIVE)
                    )
                )
            ).all()
        # A stopped one (idle stop) stays: nothing of it runs, and its home waits on the host's
        # disk through the maintenance.
        rows = [row for row in rows if row.state != EnvironmentState.STOPPED]
        movable = [env_id for env_id, state in rows if state == EnvironmentState.RUNNING]
        moving = [env_id for env_id in movable if env_id not in stuck]
        groups = (moving[i : i + DRAIN_PARALLEL] for i in range(0, len(moving), DRAIN_PARALLEL))
        for group in groups:
            for env_id in group:
                try:
                    await migrate(fleet, admin, env_id)
                except FleetError as exc:
                    stuck[env_id] = exc.message
            moves = [task for env_id in group if (task := fleet.at_work(env_id)) is not None]
            await asyncio.gather(*moves, return_exceptions=True)
        left = [env_id for env_id, _ in rows if env_id not in stuck]
        if not rows or (not moving and not left):
            break
        if fleet.clock.monotonic() > deadline:
            log.warning("drain of %s gave up after %.0f s", name, DRAIN_TIMEOUT_SECONDS)
            return
        if not moving:
            await fleet.clock.sleep(1.0)  # provisioning or deleting ones: let them settle
    if stuck:
        for env_id, why in stuck.items():
            log.warning("drain of %s: %s cannot move: %s", name, env_id, why)
        return  # stays draining: an operator must make room, then drain again
    await set_host_state(fleet.store, name, HostState.MAINTENANCE, fleet.clock.now())
    log.info("host %s drained: in maintenance", name)
