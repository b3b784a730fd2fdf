"""Leases (leeward.fleet.leases), on SQLite and PostgreSQL, on a manual clock: one replica at a
time holds a piece of work; an expired hold is anyone's; a hold that ended never touches the
next one; a replica that lost its hold stops the work under it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from leeward.common.clock import ManualClock
from leeward.fleet.leases import LeaseLost, Leases
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import LeaseRow


@pytest.fixture
async def store(database_url):
    store = Store(database_url)
    await store.migrate()
    yield store
    await store.close()


async def test_one_replica_at_a_time_and_an_expired_hold_is_anyones(store):
    clock = ManualClock()
    a, b = (Leases(store, clock, 30.0, holder=h) for h in ("a", "b"))
    first = await a.take("env:x")
    assert first is not None
    assert await b.take("env:x") is None, "a holds it"
    assert await a.take("env:x", if_mine=False) is None, "recovery leaves a's own work alone"
    again = await a.take("env:x")
    assert again is not None and again != first, "a renews by taking again: a new hold"
    assert await a.holders(["env:x", "env:y"]) == {"env:x": "a"}

    clock.advance(31)  # a died: its hold ran out
    assert await b.holders(["env:x"]) == {}
    taken = await b.take("env:x", if_mine=False)
    assert taken is not None
    assert await a.renew("env:x", again) is False, "a's hold is over"
    await a.release("env:x", again)  # a late release of the old hold touches nothing
    assert await b.holders(["env:x"]) == {"env:x": "b"}
    assert await b.renew("env:x", taken) is True
    await b.release("env:x", taken)
    assert await a.take("env:x") is not None


async def test_a_grant_in_the_placing_transaction_wins_over_an_ending_hold(store):
    clock = ManualClock()
    a, b = (Leases(store, clock, 30.0, holder=h) for h in ("a", "b"))
    ending = await b.take("env:warm")  # b's start of a warm container, finishing
    assert ending is not None
    async with store.write() as session:  # a claims the container for a tenant
        tickets = await a.grant(session, ["env:warm", "env:new"])
    assert set(tickets) == {"env:warm", "env:new"}
    await b.release("env:warm", ending)  # b's release comes late: a's hold stays
    assert await a.holders(["env:warm", "env:new"]) == {"env:warm": "a", "env:new": "a"}
    assert await a.renew("env:warm", tickets["env:warm"])


async def test_work_stops_when_its_hold_is_lost_and_its_lease_is_let_go_after(store):
    clock, later = ManualClock(), ManualClock()
    a, b = Leases(store, clock, 30.0, holder="a"), Leases(store, later, 30.0, holder="b")
    ticket = await a.take("loop:pools")
    assert ticket is not None
    started = asyncio.Event()

    async def work() -> None:
        async with a.holding("loop:pools", ticket):
            started.set()
            await asyncio.Event().wait()  # until stopped

    task = asyncio.create_task(work())
    await started.wait()
    clock.advance(10)  # a renews at a third of the lease
    await until_renewed(a, "loop:pools")
    # ... but then a is paused past its lease (b's clock is where a's would be), and b takes
    # it meanwhile.
    later.advance(10 + 31)
    assert await b.take("loop:pools") is not None
    clock.advance(10)  # a's next renewal finds it gone: the work is stopped
    async with asyncio.timeout(10):
        with pytest.raises(LeaseLost):
            await task
    assert await b.holders(["loop:pools"]) == {"loop:pools": "b"}, "b's hold is untouched"

    # A block that ends lets its lease go at once.
    ticket = await a.take("env:done")
    assert ticket is not None
    async with a.holding("env:done", ticket):
        pass
    assert await b.take("env:done") is not None


async def until_renewed(leases: Leases, name: str) -> None:
    """Until the renewal that the clock's advance woke is written (it runs in its own task):
    the hold reaches a whole lease ahead again. A poll with a deadline."""
    async with asyncio.timeout(10):
        while True:
            async with leases.store.read() as session:
                row = await session.get(LeaseRow, name)
            if row is not None and row.until - leases.clock.now() >= timedelta(seconds=29):
                return
            await asyncio.sleep(0.01)


async def test_newer_work_of_the_same_replica_takes_the_lease_without_stopping_the_older(store):
    """A delete after a start, in one replica: the delete takes the lease (it waits for the
    start itself, in that replica); the start is not stopped as if another replica had won."""
    clock = ManualClock()
    a = Leases(store, clock, 30.0, holder="a")
    first = await a.take("env:x")
    assert first is not None
    finished = asyncio.Event()

    async def start() -> None:
        async with a.holding("env:x", first):
            await finished.wait()

    task = asyncio.create_task(start())
    await asyncio.sleep(0)  # the start holds it, and its renewer waits on the clock
    renewer = next(t for t in asyncio.all_tasks() if t.get_name() == "lease:env:x")
    second = await a.take("env:x")  # the delete
    assert second is not None and second != first
    clock.advance(10)  # the start's renewal finds the lease its replica's, under another hold
    async with asyncio.timeout(10):
        await renewer  # ... and stops renewing
    assert not task.done(), "the start goes on"
    finished.set()
    await task  # ends normally, and its release leaves the delete's hold alone
    assert await a.renew("env:x", second)
