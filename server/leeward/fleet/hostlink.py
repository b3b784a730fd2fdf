"""Host agents as the fleet sees them: the host tokens an admin issues (kept hashed), the
heartbeats that register a host and say where its API is, reachability (a host not heard from
for `MISSED_BEATS` heartbeats is unreachable, and back when it is heard again), and the records
a host may read: its own environments', never another host's.

The fleet's command key (Ed25519, beside the SSH CAs in the store, shared by replicas) signs
every command to a host (leeward.common.hostauth); a host is given its public half with its
token, and trusts nothing else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from leeward.common.hostauth import new_command_key, public_text
from leeward.fleet.auth import digest, new_secret
from leeward.fleet.errors import Forbidden, Unauthorized
from leeward.fleet.hostapi import HostsProvider
from leeward.fleet.hosts import in_service
from leeward.fleet.placement import LIVE
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import AuthorityRow, EnvironmentRow, HostRow
from leeward_protocol.host import HostAck, HostRecord, HostRecords, HostStatus

log = logging.getLogger(__name__)

HOST_TOKEN_PREFIX = "lwh_"  # noqa: S105 (greppable when leaked; not a secret)
MISSED_BEATS = 3
"""Heartbeats a host may miss before the fleet calls it unreachable."""


@dataclass(frozen=True)
class HostToken:
    host: str
    token: str
    expires_at: datetime | None
    fleet_key: str


async def load_command_key(store: Store) -> str:
    """The fleet's private command key, made on first use; replicas share it."""
    async with store.write() as session:
        row = await session.get(AuthorityRow, 1)
        assert row is not None, "the SSH authority is made first"
        if row.command_key is None:
            row.command_key = new_command_key()
        return row.command_key


async def issue_host_token(
    store: Store, name: str, now: datetime, *, hours: int | None = None
) -> HostToken:
    """A new token for host `name`'s agent (the previous one stops working), with the fleet's
    public command key, which the host pins."""
    key = await load_command_key(store)
    secret = new_secret(HOST_TOKEN_PREFIX)
    async with store.write() as session:
        row = await in_service(session, name)
        row.token_digest = digest(secret)
        row.token_expires_at = now + timedelta(hours=hours) if hours else None
        expires = row.token_expires_at
    return HostToken(name, secret, expires, public_text(key))


async def authenticate_host(store: Store, header: str | None, name: str, now: datetime) -> None:
    """That the request carries host `name`'s own token: 401 for none, an unknown or an
    expired one; 403 for another host's."""
    scheme, _, secret = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("A host agent must send `Authorization: Bearer <host token>`.")
    async with store.read() as session:
        row = await session.scalar(
            select(HostRow).where(HostRow.token_digest == digest(secret.strip()))
        )
    if row is None:
        raise Unauthorized(
            "Unknown host token: an admin issues one with `leeward admin host token HOST`."
        )
    if row.token_expires_at is not None and row.token_expires_at <= now:
        raise Unauthorized(
            f"Host {row.name}'s token has expired: issue a new one with "
            f"`leeward admin host token {row.name}`."
        )
    if row.name != name:
        raise Forbidden(f"This token is host {row.name}'s; it cannot speak for {name}.")


async def heartbeat(fleet: Fleet, name: str, status: HostStatus) -> HostAck:
    """Host `name` (authenticated) is alive: where it is reached and what it has."""
    now = fleet.clock.now()
    async with fleet.store.write() as session:
        row = await session.get(HostRow, name)
        assert row is not None
        was = row.reachable
        row.url, row.last_seen_at, row.reachable = status.url.rstrip("/"), now, True
        row.report = json.dumps(status.wire())
    if was is not True:
        log.info("host %s is reachable at %s", name, status.url)
    if isinstance(fleet.provider, HostsProvider):
        fleet.provider.heard(name, status)
    return HostAck(interval_seconds=fleet.config.heartbeat_seconds)


async def watch(fleet: Fleet) -> list[str]:
    """Mark unreachable the hosts not heard from within the window; returns their names."""
    now = fleet.clock.now()
    window = timedelta(seconds=MISSED_BEATS * fleet.config.heartbeat_seconds)
    async with fleet.store.write() as session:
        lost = (
            await session.scalars(
                update(HostRow)
                .where(HostRow.reachable.is_(True), HostRow.last_seen_at < now - window)
                .values(reachable=False)
                .returning(HostRow.name)
            )
        ).all()
    for name in lost:
        log.warning(
            "host %s is unreachable: not heard from for %.0f s; its environments run on, "
            "but nothing can be started, stopped or moved there until it is back",
            name,
            window.total_seconds(),
        )
    return list(lost)


async def records(store: Store, name: str) -> HostRecords:
    """The environments placed on host `name` (live ones), as the fleet knows them."""
    async with store.read() as session:
        rows = await session.execute(
            select(
                EnvironmentRow.id, EnvironmentRow.name, EnvironmentRow.state, EnvironmentRow.address
            ).where(EnvironmentRow.host == name, EnvironmentRow.state.in_(LIVE))
        )
        return HostRecords(
            environments=[HostRecord(id=i, name=n, state=s, address=a) for i, n, s, a in rows.all()]
        )
