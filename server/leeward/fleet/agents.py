"""What environments' agents tell the fleet and ask of it: heartbeats, which environment a
token belongs to, the profile an agent applies, and its reports of setup and profile sync."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import update

from leeward.common.clock import Clock
from leeward.fleet.auth import digest
from leeward.fleet.config import FleetConfig
from leeward.fleet.placement import LIVE
from leeward.fleet.profiles import ProfileStore
from leeward.fleet.resources import ENVIRONMENTS, SETUP_ITEMS, update_environment
from leeward.fleet.setup import setup_steps
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import AgentReport, EnvironmentKind
from leeward_protocol.profile import AgentProfile


async def heartbeat(store: Store, clock: Clock, token: str, environment_id: str) -> bool:
    """Note that the agent of `environment_id` is alive; False when `token` is not its own (it
    was replaced) or the environment is gone."""
    seen = (
        update(ENVIRONMENTS)
        .where(
            ENVIRONMENTS.c.id == environment_id,
            ENVIRONMENTS.c.agent_token_digest == digest(token),
            ENVIRONMENTS.c.state.in_(LIVE),
        )
        .values(last_seen_at=clock.now())
    )
    return await store.update_soon(seen) > 0


async def agent_environment(store: Store, token: str, environment_id: str) -> EnvironmentRow | None:
    """The live environment whose agent holds `token`; None for any other token."""
    async with store.read() as session:
        row = await session.get(EnvironmentRow, environment_id)
    if (
        row is None
        or row.agent_token_digest is None
        or not secrets.compare_digest(row.agent_token_digest, digest(token))
        or row.state not in LIVE
    ):
        return None
    return row


async def agent_profile(
    config: FleetConfig, profiles: ProfileStore, row: EnvironmentRow
) -> AgentProfile:
    """What `row`'s agent applies and watches: its owner's profile, the tracked paths and
    the setup steps."""
    store = config.profile_store
    if row.owner is None:
        return AgentProfile(
            owner=None,
            profile=None,
            tracked=[],
            setup=[],
            debounce_seconds=store.debounce_seconds,
        )
    profile = await profiles.profile(row.owner)
    user_config = profile.config
    tracked = list(
        dict.fromkeys([*store.tracked, *(user_config.tracked_paths if user_config else [])])
    )
    return AgentProfile(
        owner=row.owner,
        profile=profile,
        tracked=tracked,
        setup=setup_steps(config, EnvironmentKind(row.kind), user_config),
        debounce_seconds=store.debounce_seconds,
    )


async def report(store: Store, clock: Clock, row: EnvironmentRow, report: AgentReport) -> None:
    """Store what an agent reports of its setup items and profile sync (an event)."""
    values: dict[str, Any] = {}
    if report.setup is not None:
        values["setup"] = SETUP_ITEMS.dump_json(report.setup, by_alias=True).decode()
    if report.sync is not None:
        values["sync"] = report.sync.model_dump_json(by_alias=True)
    if values:
        await update_environment(store, clock, row.id, expect=set(LIVE), **values)
