"""Warm pools: containers started ahead, per region and profile, so that a user's container is
ready at once. Claiming one for a tenant, and refilling the pools."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.auth import Principal
from leeward.fleet.errors import NoCapacity
from leeward.fleet.placement import Batch, NewEnvironment, place
from leeward.fleet.provision import issue_identity, provision
from leeward.fleet.resources import new_name
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow, HostRow
from leeward.providers.base import Identity
from leeward_protocol.fleet import CreateContainer, EnvironmentKind, EnvironmentState, Hardware


async def claim_warm(
    session: AsyncSession,
    who: Principal,
    request: CreateContainer,
    expires_at: datetime | None,
    now: datetime,
) -> EnvironmentRow | None:
    """The oldest warm container of the profile (and region, if asked), now `who`'s and
    provisioning; None when the pool is empty. The caller gives it its tenant's identity in
    the same transaction."""
    query = (
        select(EnvironmentRow)
        .where(
            EnvironmentRow.state == EnvironmentState.WARM.value,
            EnvironmentRow.profile == request.profile,
            EnvironmentRow.owner.is_(None),
            # Not on a host its fleet cannot ask now: the hand-over would fail.
            EnvironmentRow.host.not_in(select(HostRow.name).where(HostRow.reachable.is_(False))),
        )
        .order_by(EnvironmentRow.created_at)
        .limit(1)
    )
    if request.region is not None:
        query = query.where(EnvironmentRow.region == request.region)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = await session.scalar(query)
    if row is None:
        return None
    name = request.name or new_name(request.profile)
    row.name = name
    row.live_name = name
    row.owner = who.user
    row.state = EnvironmentState.PROVISIONING.value
    row.status_message = "claimed from the warm pool"
    row.expires_at = expires_at
    row.created_at = now
    row.updated_at = now
    await session.flush()
    return row


async def refill_pools(fleet: Fleet) -> int:
    """Start warm containers until every (region, profile) pool is full; returns how many."""
    wanted: list[tuple[str, str, Hardware]] = []
    async with fleet.store.read() as session:
        rows = await session.execute(
            select(EnvironmentRow.region, EnvironmentRow.profile, func.count())
            .where(
                EnvironmentRow.owner.is_(None),
                EnvironmentRow.state.in_(
                    [EnvironmentState.WARM.value, EnvironmentState.PROVISIONING.value]
                ),
            )
            .group_by(EnvironmentRow.region, EnvironmentRow.profile)
        )
        counts = {(region, profile): n for region, profile, n in rows.all()}
    for region in fleet.config.regions:
        for profile in fleet.config.profiles:
            missing = profile.warm_pool - counts.get((region.name, profile.name), 0)
            wanted.extend((region.name, profile.name, profile.hardware) for _ in range(missing))
    if not wanted:
        return 0
    placed: list[tuple[EnvironmentRow, Identity]] = []
    async with fleet.store.write() as session:
        batch = Batch()
        for region_name, profile_name, need in wanted:
            warm = NewEnvironment(
                name=new_name(f"{profile_name}-warm"),
                kind=EnvironmentKind.CONTAINER,
                need=need,
                region=region_name,
                owner=None,
                profile=profile_name,
            )
            try:
                row = await place(session, batch, fleet.config, warm, fleet.clock.now())
            except NoCapacity:
                continue
            identity, row.agent_token_digest = issue_identity(
                fleet.authority, fleet.config.zone, row, fleet.clock.now()
            )
            placed.append((row, identity))
        await batch.flush(session)
        tickets = await fleet.leases.grant(session, (f"env:{row.id}" for row, _ in placed))
    for row, identity in placed:
        work = provision(fleet, row.id, identity, placed=row)
        fleet.spawn(row.id, work, granted=tickets[f"env:{row.id}"])
    return len(placed)
