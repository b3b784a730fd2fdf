"""The delivery loop: every `[notify] poll_seconds`, lease the deliveries that are due, send
them outside any transaction, and record each outcome.

- Lease: one short transaction; a conditional UPDATE (still pending and due, or leased with its
  lease run out) marks them leased to this round's ticket, so two replicas never send the
  same delivery at once (PostgreSQL re-checks the condition on a row another transaction just
  changed; SQLite writes one at a time).
- Send: concurrently, each attempt within half the lease (so that the lease outlives it), one
  round per sink at a time: a slow or down sink never holds up the others.
- Record: right after each send, in its own transaction: `sent`, or a retry after an
  exponential backoff with jitter (`leeward.common.backoff`), or `failed` with the reason
  after `max_attempts`. A fleet killed after leasing and before recording leaves the delivery
  leased; once its lease runs out it is leased and sent again (see docs/operator.md for what
  "exactly once" means for each sink).

Paused sinks' deliveries are not leased: they wait, their attempts uncounted. The editor's are
never leased: the editor fetches its notifications and reports them seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.common.backoff import Backoff
from leeward.fleet.config import FleetConfig
from leeward.fleet.leases import replica_name
from leeward.fleet.notify import sinks as sink_module
from leeward.fleet.notify.outbox import NOTIFIED, configured
from leeward.fleet.notify.sinks import Outgoing, SendFailed
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import DeliveryRow, NotificationRow, PreferencesRow, SinkRow
from leeward_protocol.notify import DeliveryState, NotificationKind, SinkName

log = logging.getLogger(__name__)

PUSHED = (SinkName.EMAIL, SinkName.CHAT, SinkName.TRACKER)
"""The sinks the loop sends to (the editor pulls)."""

BATCH = 100
"""The most deliveries one round of one sink leases."""

HOLDER = replica_name()


@dataclass(frozen=True)
class Leased:
    delivery_id: int
    sink: SinkName
    attempts: int
    ticket: str
    outgoing: Outgoing


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    sink: SinkName
    state: DeliveryState
    reason: str


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(
            DeliveryRow.state == DeliveryState.PENDING.value,
            DeliveryRow.next_attempt_at <= now,
        ),
        and_(
            DeliveryRow.state == DeliveryState.LEASED.value,
            DeliveryRow.leased_until < now,
        ),
    )


async def paused_sinks(session: AsyncSession) -> set[str]:
    rows = await session.execute(select(SinkRow.name).where(SinkRow.paused.is_(True)))
    return set(rows.scalars())


async def lease_due(fleet: Fleet, sinks: Iterable[SinkName]) -> list[Leased]:
    """Lease what is due for `sinks` (less paused ones) to a new ticket of this replica, in one
    short transaction; deliveries to a sink the fleet no longer configures end failed."""
    config = fleet.config
    ticket = f"{HOLDER}/{secrets.token_hex(6)}"
    pushed = [s.value for s in sinks if s in PUSHED]
    # Most rounds find nothing: they look in a read transaction, and only take the (on SQLite,
    # fleet-wide) write lock when there is something to lease.
    async with fleet.store.read() as session:
        held = select(SinkRow.name).where(SinkRow.paused.is_(True))
        due = select(DeliveryRow.id).where(
            DeliveryRow.sink.in_(pushed),
            DeliveryRow.sink.not_in(held.scalar_subquery()),
            _due(fleet.clock.now()),
        )
        if (await session.execute(due.limit(1))).first() is None:
            return []
    async with fleet.store.write() as session:
        now = fleet.clock.now()
        paused = await paused_sinks(session)
        wanted = [s for s in sinks if s in PUSHED and s.value not in paused]
        gone = [s.value for s in wanted if not configured(config, s)]
        if gone:
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.sink.in_(gone), _due(now))
                .values(
                    state=DeliveryState.FAILED.value,
                    reason="The fleet no longer has this sink configured.",
                    next_attempt_at=None,
                    leased_until=None,
                    updated_at=now,
                )
            )
        names = [s.value for s in wanted if configured(config, s)]
        if not names:
            return []
        ids = list(
            (
                await session.execute(
                    select(DeliveryRow.id)
                    .where(DeliveryRow.sink.in_(names), _due(now))
                    .order_by(DeliveryRow.id)
                    .limit(BATCH)
                )
            ).scalars()
        )
        if not ids:
            return []
        await session.execute(
            update(DeliveryRow)
            .where(DeliveryRow.id.in_(ids), _due(now))
            .values(
                state=DeliveryState.LEASED.value,
                leased_by=ticket,
                leased_until=now + timedelta(seconds=config.notify.lease_seconds),
                attempts=DeliveryRow.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        rows = (
            await session.execute(
                select(DeliveryRow, NotificationRow, PreferencesRow.email)
                .join(NotificationRow, NotificationRow.id == DeliveryRow.notification_id)
                .outerjoin(PreferencesRow, PreferencesRow.user == NotificationRow.user)
                .where(DeliveryRow.leased_by == ticket)
                .order_by(DeliveryRow.id)
            )
        ).all()
    return [
        Leased(
            delivery_id=delivery.id,
            sink=SinkName(delivery.sink),
            attempts=delivery.attempts,
            ticket=ticket,
            outgoing=Outgoing(
                notification_id=notification.id,
                user=notification.user,
                kind=NotificationKind(notification.kind),
                title=notification.title,
                body=notification.body,
                environment=notification.environment,
                values=json.loads(notification.data or "{}"),
                email=email,
                zone=config.zone,
                actions=json.loads(notification.actions or "[]"),
            ),
        )
        for delivery, notification, email in rows
    ]


async def attempt(fleet: Fleet, leased: Leased) -> Outcome:
    """Send one leased delivery and record what became of it at once (the shorter the time
    between the two, the smaller the window in which a killed fleet sends it twice)."""
    notify = fleet.config.notify
    reason = ""
    try:
        await sink_module.send(leased.sink, leased.outgoing, notify, notify.lease_seconds / 2)
    except SendFailed as exc:
        reason = str(exc)
    except Exception as exc:  # a sink's library failing in a way of its own
        log.exception("sending notification %s to %s", leased.outgoing.identity, leased.sink)
        reason = f"Unexpected {type(exc).__name__}: {exc}"
    return await record(fleet, leased, reason)


async def record(fleet: Fleet, leased: Leased, reason: str) -> Outcome:
    """Sent (no reason), a retry after a backoff, or failed after `max_attempts`. Only while
    the delivery is still this ticket's: a lease taken over is the other replica's to record."""
    notify = fleet.config.notify
    async with fleet.store.write() as session:
        now = fleet.clock.now()
        if not reason:
            state, values = DeliveryState.SENT, {"sent_at": now, "next_attempt_at": None}
        elif leased.attempts >= notify.max_attempts:
            state, values = DeliveryState.FAILED, {"next_attempt_at": None}
            reason = f"Gave up after {leased.attempts} attempts: {reason}"
        else:
            backoff = Backoff(notify.backoff_seconds, notify.max_backoff_seconds)
            wait = backoff.delay(leased.attempts - 1)
            state, values = (
                DeliveryState.PENDING,
                {"next_attempt_at": now + timedelta(seconds=wait)},
            )
        await session.execute(
            update(DeliveryRow)
            .where(
                DeliveryRow.id == leased.delivery_id,
                DeliveryRow.leased_by == leased.ticket,
                DeliveryRow.state == DeliveryState.LEASED.value,
            )
            .values(
                state=state.value,
                reason=reason,
                leased_until=None,
                updated_at=now,
                **values,
            )
        )
    if reason:
        log.info("notification %s to %s: %s", leased.outgoing.identity, leased.sink, reason)
    return Outcome(leased.delivery_id, leased.sink, state, reason)


async def deliver_due(fleet: Fleet, sinks: Iterable[SinkName] = PUSHED) -> list[Outcome]:
    """One round: lease what is due for `sinks`, send it all concurrently, record each."""
    leased = await lease_due(fleet, list(sinks))
    return list(await asyncio.gather(*(attempt(fleet, one) for one in leased)))


class Postman:
    """The delivery loop's tasks: one round per sink at a time, so that a sink whose sends hang
    until their timeout does not delay the others' next rounds. Besides the loop's rounds, a
    commit of this replica that wrote a notification starts a round at once, or another right
    after the one running: delivery then takes milliseconds, not a poll interval.
    Other replicas' notifications wait for the loop (`[notify] poll_seconds`)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._rounds: dict[SinkName, asyncio.Task[list[Outcome]]] = {}
        self._again: set[SinkName] = set()

    async def round(self) -> None:
        self.poke()

    def poke(self) -> None:
        if self.fleet.closing:
            return
        for sink in PUSHED:
            running = self._rounds.get(sink)
            if running is not None and not running.done():
                self._again.add(sink)  # it may have leased before this commit: once more after
                continue
            self._start(sink)

    def _start(self, sink: SinkName) -> None:
        task = self.fleet.start_task(
            deliver_due(self.fleet, [sink]), f"notification delivery to {sink}"
        )
        self._rounds[sink] = task
        task.add_done_callback(lambda _: self._after(sink))

    def _after(self, sink: SinkName) -> None:
        if sink in self._again and not self.fleet.closing:
            self._again.discard(sink)
            self._start(sink)


def start(fleet: Fleet, config: FleetConfig) -> None:
    """Start the delivery loop (fleet/app.py), unless delivery is turned off."""
    if config.notify.enabled:
        postman = Postman(fleet)
        fleet.start_loop(config.notify.poll_seconds, postman.round, "notification delivery")
        fleet.store.wrote.setdefault(NOTIFIED, []).append(postman.poke)
