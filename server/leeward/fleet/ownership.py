"""Whose environments a caller sees: finding one by id or live name, listing a user's.

A user sees their own, an admin everyone's. Someone else's environment is a 404, not a 403:
whether it exists is none of the caller's business. (Sharing will widen "their own".)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.auth import Principal
from leeward.fleet.errors import NotFound
from leeward.fleet.resources import to_resource
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import Environment, EnvironmentState

_LISTED = [
    EnvironmentState.PROVISIONING,
    EnvironmentState.RUNNING,
    EnvironmentState.MIGRATING,
    EnvironmentState.STOPPED,
    EnvironmentState.DELETING,
    EnvironmentState.FAILED,
]


async def find_environment(session: AsyncSession, who: Principal, ref: str) -> EnvironmentRow:
    """By id, or by name among live environments. Someone else's is a 404, not a 403: it is
    none of the caller's business whether it exists."""
    row = await session.get(EnvironmentRow, ref)
    if row is None:
        row = await session.scalar(select(EnvironmentRow).where(EnvironmentRow.live_name == ref))
    if row is None or row.state == EnvironmentState.WARM or row.owner is None:
        raise NotFound(f"No environment {ref!r}: `leeward list` shows yours.")
    if row.owner != who.user and not who.is_admin:
        raise NotFound(f"No environment {ref!r}: `leeward list` shows yours.")
    return row


async def get_environment(store: Store, zone: str, who: Principal, ref: str) -> Environment:
    async with store.read() as session:
        row = await find_environment(session, who, ref)
        return to_resource(row, zone)


async def list_environments(
    store: Store, zone: str, who: Principal, *, everyone: bool = False
) -> list[Environment]:
    """`who`'s environments that are not deleted (an admin's `everyone`: all users')."""
    query = select(EnvironmentRow).where(EnvironmentRow.state.in_(_LISTED))
    if not (everyone and who.is_admin):
        query = query.where(EnvironmentRow.owner == who.user)
    async with store.read() as session:
        rows = (await session.execute(query.order_by(EnvironmentRow.created_at))).scalars()
        return [to_resource(r, zone) for r in rows]
