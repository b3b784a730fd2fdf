"""The event log: every change to an environment, in commit order, for clients to stream.

Triggers on `environments` write the events in the changing transaction (migration 0002), so
the log cannot miss a change. Clients see `position` as the event id. On SQLite the trigger
numbers events itself (one writer at a time). On PostgreSQL transactions commit in any order,
so a number taken inside one could be overtaken; the sequencer here numbers committed rows
instead, one sequencer at a time across replicas (an advisory lock), and a stream only ever
reads numbered rows: a client that has seen N never misses an event numbered below N.

Streams wait on this process's commits (`Store.committed`) and, for other replicas' writes,
poll every `event_poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import delete, func, select, text

from leeward.common.clock import Clock
from leeward.fleet.resources import environment_from_snapshot
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EventRow
from leeward_protocol.fleet import EventType, FleetEvent

log = logging.getLogger(__name__)

SEQUENCER_LOCK = 0x1EE_E7E7
"""PostgreSQL advisory lock held by the one sequencer numbering events at a time."""

_SEQUENCE = text(
    """
    UPDATE events SET position = numbered.base + numbered.n
    FROM (
        SELECT id, row_number() OVER (ORDER BY id) AS n,
               (SELECT COALESCE(MAX(position), 0) FROM events) AS base
        FROM events WHERE position IS NULL
    ) AS numbered
    WHERE events.id = numbered.id
    """
)

READ_LIMIT = 500
"""Most events one read returns; a stream that is behind reads again at once."""


class EventLog:
    def __init__(self, store: Store, zone: str, clock: Clock, *, poll_seconds: float) -> None:
        self.store = store
        self.zone = zone
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._numbered = asyncio.Event()
        self._committed = asyncio.Event()
        self._sequencer: asyncio.Task[None] | None = None
        self._closed = False
        store.committed.append(self._committed.set)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._sequencer = asyncio.get_running_loop().create_task(
            self._run(), name="event sequencer"
        )

    async def close(self) -> None:
        self._closed = True
        self._numbered.set()
        with contextlib.suppress(ValueError):
            self.store.committed.remove(self._committed.set)
        if self._sequencer is not None:
            self._sequencer.cancel()
            await asyncio.gather(self._sequencer, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._committed.wait()
            self._committed.clear()
            try:
                if self.store.dialect == "postgresql":
                    await self.sequence()
            except Exception:
                log.exception("numbering events failed; trying again")
            # Wake the streams: they read what is new (another replica's events included).
            self._numbered.set()
            self._numbered = asyncio.Event()

    async def sequence(self) -> int:
        """Number the committed events that have no position yet (PostgreSQL); returns how many."""
        async with self.store.read() as session:
            pending = await session.scalar(
                select(EventRow.id).where(EventRow.position.is_(None)).limit(1)
            )
        if pending is None:
            return 0
        async with self.store.write() as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQUENCER_LOCK})
            result = await session.execute(_SEQUENCE)
            return int(getattr(result, "rowcount", 0))

    async def wait(self, seconds: float) -> None:
        """Until new events may have been numbered, or `seconds` pass."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._numbered.wait()

    # -- reading ---------------------------------------------------------------------------------

    async def head(self) -> int:
        """The newest event's id (0 when there is none)."""
        async with self.store.read() as session:
            head = await session.scalar(select(func.max(EventRow.position)))
        return int(head or 0)

    async def resumable(self, after: int) -> bool:
        """Whether every event after `after` is still kept (and `after` is one this log gave)."""
        async with self.store.read() as session:
            first, last = (
                await session.execute(
                    select(func.min(EventRow.position), func.max(EventRow.position))
                )
            ).one()
        if first is None or last is None:
            return after == 0
        return after <= last and after + 1 >= first

    async def read_after(
        self, after: int, owner: str | None, *, limit: int = READ_LIMIT
    ) -> list[FleetEvent]:
        """Numbered events after `after`, oldest first: `owner`'s, or everyone's when None."""
        query = (
            select(EventRow)
            .where(EventRow.position > after)
            .order_by(EventRow.position)
            .limit(limit)
        )
        if owner is not None:
            query = query.where(EventRow.owner == owner)
        async with self.store.read() as session:
            rows = (await session.execute(query)).scalars().all()
        return [self._event(row) for row in rows]

    def _event(self, row: EventRow) -> FleetEvent:
        assert row.position is not None
        return FleetEvent(
            id=row.position,
            type=EventType.ENVIRONMENT,
            at=row.at,
            environment=environment_from_snapshot(row.snapshot, self.zone),
        )

    def reset(self, head: int) -> FleetEvent:
        """Tells a client to list again and go on from `head`."""
        return FleetEvent(id=head, type=EventType.RESET, at=self.clock.now())

    # -- retention -------------------------------------------------------------------------------

    async def prune(self, retention: timedelta) -> int:
        """Forget events older than `retention`, always keeping the newest (it anchors ids)."""
        cutoff = self.clock.now() - retention
        async with self.store.write() as session:
            newest = await session.scalar(select(func.max(EventRow.position)))
            if newest is None:
                return 0
            result = await session.execute(
                delete(EventRow).where(EventRow.at < cutoff, EventRow.position < newest)
            )
            return int(getattr(result, "rowcount", 0))
