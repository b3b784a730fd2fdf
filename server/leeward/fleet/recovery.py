"""After a restart of the fleet: finish the work that was in flight, restart agents that are
gone. Private keys are never stored, so whatever was provisioning gets a fresh identity."""

from __future__ import annotations

import logging

from sqlalchemy import select

from leeward.fleet.lifecycle import teardown
from leeward.fleet.placement import LIVE
from leeward.fleet.provision import provision, restart_agent
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import EnvironmentState

log = logging.getLogger(__name__)


async def recover(fleet: Fleet) -> None:
    """After a restart: finish what was in flight, restart agents that are gone."""
    async with fleet.store.read() as session:
        rows = (
            (await session.execute(select(EnvironmentRow).where(EnvironmentRow.state.in_(LIVE))))
            .scalars()
            .all()
        )
    up = await fleet.provider.running([r.id for r in rows])
    for row in rows:
        if row.state == EnvironmentState.DELETING:
            fleet.spawn(row.id, teardown(fleet, row.id))
        elif row.state == EnvironmentState.PROVISIONING:
            # Whether its agent started with the old identity or not, give it a new one:
            # the fleet cannot know what reached the agent before it stopped.
            fleet.spawn(row.id, provision(fleet, row.id, adopt=row.id in up))
        elif row.id not in up:
            log.warning("environment %s (%s) is not up; restarting its agent", row.id, row.name)
            fleet.spawn(row.id, restart_agent(fleet, row.id))
