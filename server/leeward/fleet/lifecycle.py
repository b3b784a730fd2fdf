"""The end of an environment's life, and pushing it back: delete and its teardown, extend,
reaping what expired, retrying deletions whose stop failed, and the periodic sweep."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from leeward.fleet.auth import Principal
from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Conflict, Invalid
from leeward.fleet.ownership import find_environment
from leeward.fleet.resources import to_resource, update_environment
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward.providers.base import ProviderError
from leeward_protocol.fleet import Environment, EnvironmentKind, EnvironmentState

log = logging.getLogger(__name__)


async def delete(fleet: Fleet, who: Principal, ref: str) -> Environment:
    async with fleet.store.write() as session:
        row = await find_environment(session, who, ref)
        if row.state == EnvironmentState.DELETED:
            return to_resource(row, fleet.config.zone)
        if row.state == EnvironmentState.FAILED:
            # Nothing runs and nothing is held any more: deleting only takes it off lists.
            now = fleet.clock.now()
            row.state, row.deleted_at, row.updated_at = EnvironmentState.DELETED.value, now, now
            return to_resource(row, fleet.config.zone)
        row.state = EnvironmentState.DELETING.value
        row.status_message = "deleting"
        row.updated_at = fleet.clock.now()
    fleet.spawn(row.id, teardown(fleet, row.id, after=fleet.at_work(row.id)))
    return to_resource(row, fleet.config.zone)


async def teardown(fleet: Fleet, env_id: str, after: asyncio.Task[None] | None = None) -> None:
    """Stop a deleting environment on its host, then mark it deleted (its name, address and
    token free again)."""
    if after is not None:
        # Let a start in flight finish first, so that the stop below is the last word.
        await asyncio.gather(after, return_exceptions=True)
    try:
        await fleet.provider.stop(env_id)
    except ProviderError as exc:
        # It stays `deleting`, holding its capacity, until a sweep stops it for good.
        log.warning("stopping %s failed: %s", env_id, exc)
        await update_environment(
            fleet.store,
            fleet.clock,
            env_id,
            status_message=f"stopping it failed ({exc}); the fleet tries again every "
            f"{fleet.config.reaper_interval_seconds:g} s",
        )
        return
    now = fleet.clock.now()
    await update_environment(
        fleet.store,
        fleet.clock,
        env_id,
        state=EnvironmentState.DELETED.value,
        status_message="deleted",
        live_name=None,
        live_address=None,
        agent_token_digest=None,
        deleted_at=now,
    )


async def extend(
    store: Store, config: FleetConfig, now: datetime, who: Principal, ref: str, hours: int
) -> Environment:
    """Push a running (or stopped: idle stop) temporary environment's expiry `hours` later,
    within its kind's limit from now."""
    lt = config.lifetimes
    async with store.write() as session:
        row = await find_environment(session, who, ref)
        if row.state not in (
            EnvironmentState.RUNNING,
            EnvironmentState.MIGRATING,
            EnvironmentState.STOPPED,
        ):
            raise Conflict(
                f"{row.name} is {row.state}; only a running or stopped environment can be extended."
            )
        if row.expires_at is None:
            raise Conflict(f"{row.name} is permanent: it has no expiry to extend.")
        limit = (
            lt.devserver_max_hours
            if row.kind == EnvironmentKind.DEVSERVER
            else lt.container_max_hours
        )
        new_expiry = max(row.expires_at, now) + timedelta(hours=hours)
        if new_expiry > now + timedelta(hours=limit):
            raise Invalid(
                f"A {row.kind} can be extended to at most {limit} hours from now; "
                "ask for fewer hours.",
                field="hours",
            )
        row.expires_at = new_expiry
        row.updated_at = now
        return to_resource(row, config.zone)


async def sweep(fleet: Fleet) -> None:
    """The periodic sweep: delete what expired, and retry deletions that failed."""
    await reap_expired(fleet)
    await retry_deletions(fleet)
    await fleet.events.prune(timedelta(hours=fleet.config.event_retention_hours))


async def retry_deletions(fleet: Fleet) -> list[str]:
    """Start the teardown again of every environment left `deleting` with nothing at work
    on it (its stop failed); returns their ids."""
    async with fleet.store.read() as session:
        ids = (
            (
                await session.execute(
                    select(EnvironmentRow.id).where(
                        EnvironmentRow.state == EnvironmentState.DELETING.value
                    )
                )
            )
            .scalars()
            .all()
        )
    stuck = [env_id for env_id in ids if fleet.at_work(env_id) is None]
    for env_id in stuck:
        fleet.spawn(env_id, teardown(fleet, env_id))
    return stuck


async def reap_expired(fleet: Fleet) -> list[str]:
    """Delete every environment whose expiry has passed; returns their ids."""
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        rows = (
            (
                await session.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.expires_at <= now,
                        EnvironmentRow.state.in_(
                            [
                                EnvironmentState.RUNNING.value,
                                EnvironmentState.MIGRATING.value,
                                EnvironmentState.PROVISIONING.value,
                                EnvironmentState.STOPPED.value,  # idle stop: it expires too
                            ]
                        ),
                    )
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.state = EnvironmentState.DELETING.value
            row.status_message = "expired"
            row.updated_at = now
    for row in rows:
        log.info("environment %s (%s) expired", row.id, row.name)
        fleet.spawn(row.id, teardown(fleet, row.id, after=fleet.at_work(row.id)))
    return [r.id for r in rows]
