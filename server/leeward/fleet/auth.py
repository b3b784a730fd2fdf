"""Bearer tokens: 256 random bits, shown once, kept as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.clock import Clock
from leeward.fleet.errors import Unauthorized
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import TokenRow, UserRow
from leeward_protocol.fleet import Role, check_user_name

TOKEN_PREFIX = "lwt_"  # noqa: S105 (a prefix that makes leaked tokens greppable, not a secret)


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def new_secret(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def ensure_user(session: AsyncSession, name: str, role: Role, now: datetime) -> UserRow:
    """The user `name`, created with `role` if new. Raises ValueError for a name that could not
    be an SSH principal (it is written into agents' trust lines)."""
    check_user_name(name)
    user = await session.get(UserRow, name)
    if user is None:
        user = UserRow(name=name, role=role.value, created_at=now)
        session.add(user)
        await session.flush()
    return user


async def issue_token(
    session: AsyncSession,
    user: str,
    now: datetime,
    *,
    hours: int | None = None,
    description: str = "",
) -> tuple[str, datetime | None]:
    secret = new_secret()
    expires = now + timedelta(hours=hours) if hours else None
    session.add(
        TokenRow(
            digest=digest(secret),
            user=user,
            description=description,
            created_at=now,
            expires_at=expires,
        )
    )
    await session.flush()
    return secret, expires


async def authenticate(
    session: AsyncSession, header: str | None, now: datetime
) -> tuple[Principal, datetime | None]:
    if not header:
        raise Unauthorized(
            "No token: send `Authorization: Bearer <token>`; run `leeward login` to get one."
        )
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("The Authorization header must be `Bearer <token>`.")
    row = (await session.execute(_BY_DIGEST, {"digest": digest(secret.strip())})).first()
    if row is None:
        raise Unauthorized("Unknown token: sign in again with `leeward login`.")
    name, role, expires_at = row
    if expires_at is not None and expires_at <= now:
        raise Unauthorized("The token has expired: sign in again with `leeward login`.")
    return Principal(user=name, role=Role(role)), expires_at


# Built once: every request runs it.
_BY_DIGEST = (
    select(UserRow.name, UserRow.role, TokenRow.expires_at)
    .join(UserRow, UserRow.name == TokenRow.user)
    .where(TokenRow.digest == bindparam("digest"))
)


class TokenVerifier:
    """Checks bearer tokens, remembering a verified one for `ttl` seconds so that a busy client
    does not cost a database read per request. Expiry is still checked on every use; a token
    removed from the store stops working within `ttl` on every replica."""

    def __init__(self, store: Store, clock: Clock, ttl: float = 5.0, size: int = 10_000) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._size = size
        self._known: dict[str, tuple[Principal, datetime | None, float]] = {}

    async def verify(self, header: str | None) -> Principal:
        now = self._clock.now()
        scheme, _, secret = (header or "").partition(" ")
        key = digest(secret.strip()) if scheme.lower() == "bearer" and secret.strip() else None
        if key is not None and (known := self._known.get(key)) is not None:
            who, expires_at, checked = known
            if self._clock.monotonic() - checked < self._ttl:
                if expires_at is not None and expires_at <= now:
                    raise Unauthorized("The token has expired: sign in again with `leeward login`.")
                return who
        async with self._store.read() as session:
            who, expires_at = await authenticate(session, header, now)
        if key is not None:
            if len(self._known) >= self._size:
                self._known.pop(next(iter(self._known)))
            self._known[key] = (who, expires_at, self._clock.monotonic())
        return who
