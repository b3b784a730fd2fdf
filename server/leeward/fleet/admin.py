"""Operators' actions: hosts, users, tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from leeward.fleet import auth
from leeward.fleet.errors import NotFound
from leeward.fleet.placement import HostUsage, host_usage
from leeward.fleet.store.models import UserRow
from leeward_protocol.fleet import CreateToken, CreateUser, Role, Token, User

if TYPE_CHECKING:
    from leeward.fleet.environments import Fleet


async def hosts(fleet: Fleet) -> list[HostUsage]:
    async with fleet.store.read() as session:
        return await host_usage(session)


async def create_user(fleet: Fleet, body: CreateUser) -> User:
    async with fleet.store.write() as session:
        row = await auth.ensure_user(session, body.name, body.role, fleet.clock.now())
        return User(name=row.name, role=Role(row.role), created_at=row.created_at)


async def create_token(fleet: Fleet, body: CreateToken) -> Token:
    async with fleet.store.write() as session:
        user = await session.get(UserRow, body.user)
        if user is None:
            raise NotFound(f"No user {body.user!r}; create it first (POST /v1/admin/users).")
        secret, expires = await auth.issue_token(
            session, user.name, fleet.clock.now(), hours=body.hours, description=body.description
        )
        return Token(token=secret, user=user.name, role=Role(user.role), expires_at=expires)
