"""Operators' actions on users and tokens (hosts have a room of their own: hosts.py)."""

from __future__ import annotations

from datetime import datetime

from leeward.fleet import auth
from leeward.fleet.errors import NotFound
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import UserRow
from leeward_protocol.fleet import CreateToken, CreateUser, Role, Token, User


async def create_user(store: Store, now: datetime, body: CreateUser) -> User:
    async with store.write() as session:
        row = await auth.ensure_user(session, body.name, body.role, now)
        return User(name=row.name, role=Role(row.role), created_at=row.created_at)


async def create_token(store: Store, now: datetime, body: CreateToken) -> Token:
    async with store.write() as session:
        user = await session.get(UserRow, body.user)
        if user is None:
            raise NotFound(f"No user {body.user!r}; create it first (POST /v1/admin/users).")
        secret, expires = await auth.issue_token(
            session, user.name, now, hours=body.hours, description=body.description
        )
        return Token(token=secret, user=user.name, role=Role(user.role), expires_at=expires)
