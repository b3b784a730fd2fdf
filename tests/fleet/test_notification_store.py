"""The notification pipeline's store rules on SQLite and PostgreSQL: a key makes `notify()`
once-only even when two transactions race for it (no error reaches the producer), and two
replicas leasing at once never lease the same delivery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select, text

from leeward.common.clock import ManualClock
from leeward.fleet import auth
from leeward.fleet.notify import delivery
from leeward.fleet.notify.outbox import notify
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import DeliveryRow, NotificationRow
from leeward_protocol.fleet import Role
from leeward_protocol.notify import NotificationKind, SinkName
from tests.conftest import small_config, until


async def fresh_store(url: str) -> Store:
    store = Store(url)
    await store.migrate()
    async with store.write() as session:
        await auth.ensure_user(session, "alice", Role.USER, datetime.now(UTC))
    return store


async def test_a_key_is_once_only_even_in_a_race(database_url: str, tmp_path: Path) -> None:
    config = small_config(tmp_path, database_url)
    store = await fresh_store(database_url)
    now = datetime.now(UTC)
    first_written = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> Any:
        async with store.write() as session:
            row = await notify(
                session, config, now, user="alice", kind=NotificationKind.EXPIRY, key="race"
            )
            first_written.set()
            await release_first.wait()  # still uncommitted while the second one tries
            return row

    async def second() -> Any:
        await first_written.wait()
        async with store.write() as session:
            return await notify(
                session, config, now, user="alice", kind=NotificationKind.EXPIRY, key="race"
            )

    try:
        racing = [asyncio.create_task(first()), asyncio.create_task(second())]
        await first_written.wait()
        if store.dialect == "postgresql":
            # The second has passed its check (it cannot see the first's row yet) and waits on
            # the unique key: then the first commits.
            async def waiting() -> bool:
                async with store.engine.connect() as conn:
                    blocked = await conn.scalar(
                        text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    )
                return bool(blocked)

            await until(waiting, "the second insert waiting on the first")
        release_first.set()
        written, again = await asyncio.gather(*racing)
        assert written is not None and again is None
        async with store.read() as session:
            assert await session.scalar(select(func.count()).select_from(NotificationRow)) == 1
            deliveries = await session.scalar(select(func.count()).select_from(DeliveryRow))
        assert deliveries == 1  # the editor's (no email address, no chat configured)
    finally:
        await store.close()


async def test_two_replicas_never_lease_the_same_delivery(
    database_url: str, tmp_path: Path
) -> None:
    config = small_config(tmp_path, database_url)
    config.notify.tracker_url = "http://127.0.0.1:9/tasks"
    config.notify.routes = {kind: [SinkName.TRACKER] for kind in NotificationKind}
    clock = ManualClock(datetime.now(UTC))
    stores = [await fresh_store(database_url), Store(database_url)]
    try:
        async with stores[0].write() as session:
            for _ in range(40):
                await notify(
                    session, config, clock.now(), user="alice", kind=NotificationKind.STORM
                )
        replicas = [SimpleNamespace(store=s, config=config, clock=clock) for s in stores]
        rounds = await asyncio.gather(
            *(
                delivery.lease_due(replica, [SinkName.TRACKER])  # type: ignore[arg-type]
                for replica in replicas
                for _ in range(3)
            )
        )
        leased = [one.delivery_id for batch in rounds for one in batch]
        assert len(leased) == 40 and len(set(leased)) == 40, sorted(leased)
        tickets = {one.ticket for batch in rounds for one in batch}
        assert len(tickets) == sum(1 for batch in rounds if batch)
        async with stores[0].read() as session:
            states = (
                await session.execute(
                    select(DeliveryRow.state, DeliveryRow.attempts, func.count()).group_by(
                        DeliveryRow.state, DeliveryRow.attempts
                    )
                )
            ).all()
        assert [tuple(row) for row in states] == [("leased", 1, 40)]
    finally:
        for store in stores:
            await store.close()
