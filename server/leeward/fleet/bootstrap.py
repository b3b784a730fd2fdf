"""How an operator gets the first token: straight to the store, no API needed."""

from __future__ import annotations

from sqlalchemy import select

from leeward.common.clock import SystemClock
from leeward.fleet import auth
from leeward.fleet.config import FleetConfig
from leeward.fleet.hostlink import HostToken, issue_host_token
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import HostRow
from leeward_protocol.fleet import Role


async def issue_token(
    config: FleetConfig,
    user: str,
    role: Role,
    *,
    hours: int | None = None,
    description: str = "",
) -> str:
    """Create `user` with `role` if needed and return a new token for them."""
    assert config.database is not None, "load_config() fills in the database"
    store = Store(config.database)
    try:
        await store.migrate()
        now = SystemClock().now()
        async with store.write() as session:
            await auth.ensure_user(session, user, role, now)
            secret, _ = await auth.issue_token(
                session, user, now, hours=hours, description=description
            )
        return secret
    finally:
        await store.close()


async def issue_host_tokens(config: FleetConfig, hosts: list[str]) -> dict[str, HostToken]:
    """New tokens for `hosts`' agents, with the fleet's public command key (the embedded fleet
    of `leeward up` joins its own hosts so). The fleet must have started once (its CA exists)."""
    assert config.database is not None, "load_config() fills in the database"
    store = Store(config.database)
    try:
        await store.migrate()
        now = SystemClock().now()
        return {name: await issue_host_token(store, name, now) for name in hosts}
    finally:
        await store.close()


async def reachable_hosts(config: FleetConfig) -> set[str]:
    """The hosts whose agents the fleet hears now, read from its store."""
    assert config.database is not None, "load_config() fills in the database"
    store = Store(config.database)
    try:
        async with store.read() as session:
            rows = await session.execute(select(HostRow.name).where(HostRow.reachable.is_(True)))
            return {name for (name,) in rows.all()}
    finally:
        await store.close()
