"""Finishing work nobody is doing: after a restart of the fleet, and all the time while several
replicas serve one store, for the work of a replica that died (its leases expired).

Work another replica holds a lease on is that replica's, and is left alone: taking its starts
for orphans is how two replicas once started the same warm containers twice. Private keys are
never stored, so whatever was provisioning gets a fresh identity.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from leeward.fleet.lifecycle import teardown
from leeward.fleet.migration import finish_move
from leeward.fleet.moves import resume_moves
from leeward.fleet.placement import LIVE
from leeward.fleet.provision import provision, restart_agent
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import EnvironmentState

log = logging.getLogger(__name__)

IN_FLIGHT = [
    EnvironmentState.PROVISIONING.value,
    EnvironmentState.DELETING.value,
    EnvironmentState.MIGRATING.value,
]


async def recover(fleet: Fleet, *, at_start: bool = False) -> int:
    """Take over the environments whose work nobody holds: finish starts, deletes and moves;
    `at_start`, also restart the agents that are gone. Returns how many it took over."""
    states = LIVE if at_start else IN_FLIGHT
    async with fleet.store.read() as session:
        rows = (
            (await session.execute(select(EnvironmentRow).where(EnvironmentRow.state.in_(states))))
            .scalars()
            .all()
        )
    moved = await resume_moves(fleet)
    rows = [r for r in rows if fleet.at_work(r.id) is None]
    held = await fleet.leases.holders(f"env:{r.id}" for r in rows)
    rows = [r for r in rows if f"env:{r.id}" not in held]
    if not rows:
        return moved
    up = await fleet.provider.running([r.id for r in rows])
    taken = 0
    for row in rows:
        if row.state == EnvironmentState.STOPPED:
            continue  # stopped for being idle: nothing runs, nothing to restart
        if row.state == EnvironmentState.DELETING:
            work = teardown(fleet, row.id)
        elif row.state == EnvironmentState.PROVISIONING:
            # Whether its agent started with the old identity or not, give it a new one:
            # the fleet cannot know what reached the agent before it stopped.
            work = provision(fleet, row.id, adopt=row.id in up)
        elif row.state == EnvironmentState.MIGRATING and row.migrating_from and row.id in up:
            work = finish_move(fleet, row.id)
        elif row.id not in up:
            log.warning("environment %s (%s) is not up; restarting its agent", row.id, row.name)
            work = restart_agent(fleet, row.id)
        else:
            continue
        # Only if nobody (this replica included) has taken it since it was read.
        fleet.spawn(row.id, work, takeover=True)
        taken += 1
    if taken and not at_start:
        log.info("took over %d environment(s) whose work no replica held", taken)
    return taken + moved
