"""What environments' agents tell the fleet and ask of it: heartbeats, which environment a
token belongs to, the profile an agent applies, and its reports of setup and profile sync."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import update

from leeward.common.clock import Clock
from leeward.fleet.activity import heartbeat_values
from leeward.fleet.auth import digest
from leeward.fleet.config import FleetConfig
from leeward.fleet.notify.outbox import notify
from leeward.fleet.placement import LIVE
from leeward.fleet.profiles import ProfileStore
from leeward.fleet.resources import ENVIRONMENTS, SETUP_ITEMS, update_environment
from leeward.fleet.setup import setup_steps
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import AgentHeartbeat, AgentReport, EnvironmentKind, SetupState
from leeward_protocol.notify import NotificationKind
from leeward_protocol.profile import AgentProfile


async def heartbeat(
    store: Store, config: FleetConfig, clock: Clock, token: str, beat: AgentHeartbeat
) -> bool:
    """Note that the agent of `beat.environment_id` is alive, and what keeps it from an idle
    stop (leeward.fleet.activity); False when `token` is not its own (it was replaced) or the
    environment is gone."""
    seen = (
        update(ENVIRONMENTS)
        .where(
            ENVIRONMENTS.c.id == beat.environment_id,
            ENVIRONMENTS.c.agent_token_digest == digest(token),
            ENVIRONMENTS.c.state.in_(LIVE),
        )
        .values(**heartbeat_values(config, beat, clock.now()))
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


async def report(
    store: Store,
    clock: Clock,
    row: EnvironmentRow,
    report: AgentReport,
    config: FleetConfig | None = None,
) -> None:
    """Store what an agent reports of its setup items and profile sync (an event). A failed
    setup step tells the owner (with `config`), once per step, in the same transaction."""
    values: dict[str, Any] = {}
    if report.setup is not None:
        values["setup"] = SETUP_ITEMS.dump_json(report.setup, by_alias=True).decode()
    if report.sync is not None:
        values["sync"] = report.sync.model_dump_json(by_alias=True)
    failed = [item for item in report.setup or [] if item.state == SetupState.FAILED]
    if failed and row.owner is not None and config is not None:
        async with store.write() as session:
            now = clock.now()
            changed = await session.execute(
                update(ENVIRONMENTS)
                .where(ENVIRONMENTS.c.id == row.id, ENVIRONMENTS.c.state.in_(LIVE))
                .values(updated_at=now, **values)
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                for item in failed:
                    await notify(
                        session,
                        config,
                        now,
                        user=row.owner,
                        kind=NotificationKind.SETUP_FAILED,
                        environment=row,
                        data={"step": item.name, "reason": item.detail or "it gave no reason"},
                        key=f"setup-failed:{row.id}:{item.name}",
                    )
        return
    if values:
        await update_environment(store, clock, row.id, expect=set(LIVE), **values)
