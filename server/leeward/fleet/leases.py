"""Leases: which fleet replica does a piece of work, so that two replicas on one PostgreSQL never
do the same one at once.

A lease is a row (`leases`): a name ("env:ID" for an environment's start, delete or move,
"loop:NAME" for a periodic loop), its holder (one replica, for the life of its process) and
until when it holds it. A replica takes a lease that is free, expired, or its own; it renews it
every third of `lease_seconds` while the work goes on and lets it go when the work ends. A
replica that dies holds nothing once its leases expire, and the others finish its work (the
recovery loop).

An environment placed by a replica is leased to it in the same transaction that inserts it,
so another replica's recovery never sees it unclaimed (the bug this fixes: two replicas
starting the same warm containers, each taking the other's starts for orphans).

Times come from the fleet's clock: replicas' clocks must agree to well within the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.clock import Clock
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import LeaseRow

log = logging.getLogger(__name__)


def replica_name() -> str:
    """This process's name as a lease holder: the machine, the pid and a nonce (a pid can be
    reused after a restart; the nonce cannot)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseLost(Exception):
    """Another replica holds a lease this one thought it held (this one was paused or cut off
    for longer than the lease): the work under it stops."""


class Leases:
    def __init__(self, store: Store, clock: Clock, seconds: float, holder: str | None = None):
        self.store = store
        self.clock = clock
        self.seconds = seconds
        self.holder = holder or replica_name()

    def _ticket(self) -> str:
        """One hold of a lease: renewals and the release name it, so that a hold that ended
        never touches the next one, even by the same replica."""
        return f"{self.holder}/{secrets.token_hex(6)}"

    async def take(self, name: str, *, if_mine: bool = True) -> str | None:
        """Take `name` if it is free, expired or (unless `if_mine` is False) already this
        replica's; its ticket, or None when another replica holds it. Recovery passes
        `if_mine=False`: what this replica holds, it is already doing."""
        now = self.clock.now()
        until, ticket = now + timedelta(seconds=self.seconds), self._ticket()
        free = LeaseRow.until < now
        claim = or_(free, LeaseRow.holder == self.holder) if if_mine else free
        async with self.store.write() as session:
            dialect = session.get_bind().dialect.name
            make = pg_insert if dialect == "postgresql" else sqlite_insert
            statement = (
                make(LeaseRow)
                .values(name=name, holder=self.holder, ticket=ticket, until=until)
                .on_conflict_do_update(
                    index_elements=[LeaseRow.name],
                    set_={"holder": self.holder, "ticket": ticket, "until": until},
                    where=claim,
                )
                .returning(LeaseRow.ticket)
            )
            taken = await session.scalar(statement)
        return ticket if taken == ticket else None

    async def grant(self, session: AsyncSession, names: Iterable[str]) -> dict[str, str]:
        """Lease work to this replica in `session`'s transaction, whoever held it: the
        environments this transaction makes, or claims from a warm pool (whose last hold, a
        start that is ending, is over). Their tickets, by name."""
        until = self.clock.now() + timedelta(seconds=self.seconds)
        tickets = {name: self._ticket() for name in names}
        if not tickets:
            return {}
        dialect = session.get_bind().dialect.name
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = make(LeaseRow)
        statement = statement.on_conflict_do_update(
            index_elements=[LeaseRow.name],
            set_={
                "holder": statement.excluded.holder,
                "ticket": statement.excluded.ticket,
                "until": statement.excluded.until,
            },
        )
        rows = [
            {"name": n, "holder": self.holder, "ticket": t, "until": until}
            for n, t in tickets.items()
        ]
        await session.execute(statement, rows)
        return tickets

    async def renew(self, name: str, ticket: str) -> bool:
        """Push a hold further; False when it is over (another replica took the lease).
        Renewals and releases share transactions with other small writes (group commit)."""
        until = self.clock.now() + timedelta(seconds=self.seconds)
        changed = await self.store.update_soon(
            update(LeaseRow)
            .where(LeaseRow.name == name, LeaseRow.ticket == ticket)
            .values(until=until)
        )
        return changed == 1

    async def release(self, name: str, ticket: str) -> None:
        await self.store.update_soon(
            delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.ticket == ticket)
        )

    async def holders(self, names: Iterable[str]) -> dict[str, str]:
        """Which replica holds each of `names` now (expired leases are nobody's)."""
        wanted = list(names)
        if not wanted:
            return {}
        async with self.store.read() as session:
            rows = await session.execute(
                select(LeaseRow.name, LeaseRow.holder).where(
                    LeaseRow.name.in_(wanted), LeaseRow.until >= self.clock.now()
                )
            )
            return {name: holder for name, holder in rows.all()}

    @contextlib.asynccontextmanager
    async def holding(self, name: str, ticket: str) -> AsyncIterator[None]:
        """Keep the hold `ticket` on `name` while the block runs: renewed every third of the
        lease; if it is lost, the block is cancelled and LeaseLost raised. Released after."""
        task = asyncio.current_task()
        assert task is not None
        lost = False

        async def renew() -> None:
            nonlocal lost
            while True:
                await self.clock.sleep(self.seconds / 3)
                try:
                    held = await self.renew(name, ticket)
                except Exception:  # the store is down for a moment: the lease has time left
                    log.warning("renewing lease %s failed; trying again", name, exc_info=True)
                    continue
                if not held:
                    if (await self.holders([name])).get(name) == self.holder:
                        # Newer work of this replica's took it over (a delete after a start):
                        # that work waits for this one; only the lease goes to it.
                        return
                    log.error("lease %s was taken by another replica; stopping its work", name)
                    lost = True
                    task.cancel()
                    return

        renewer = asyncio.get_running_loop().create_task(renew(), name=f"lease:{name}")
        try:
            yield
        except asyncio.CancelledError:
            if lost:
                raise LeaseLost(name) from None
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lost:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release(name, ticket))
