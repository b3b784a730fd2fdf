"""What the editor shows a user, in one answer: the announcements that concern them and their
notifications not yet seen (`GET /v1/inbox`, long-polled by the daemon).

A long poll answers as soon as there is news: a notification newer than the client's `after`,
or a digest (of the announcements as this user sees them) other than the client's. It wakes on
this replica's commits (`Bell`), at a scheduled announcement's start or end, and every
`event_poll_seconds` for other replicas' writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet import announcements
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import DeliveryRow, NotificationRow
from leeward_protocol.notify import (
    Action,
    Announcement,
    Delivery,
    Inbox,
    InboxQuery,
    Notification,
    SinkName,
)

SHOWN = 100
"""The most notifications one answer carries (the rest come with the next)."""

MIN_RECHECK_SECONDS = 0.05
"""A busy fleet commits often: a waiting poll looks again at most this often."""


def digest_of(shown: list[Announcement]) -> str:
    """Changes when the set of announcements, a revision, or a dismissal does."""
    parts = sorted(f"{a.id}:{a.revision}:{int(a.dismissed)}" for a in shown)
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:32]


async def unseen(session: AsyncSession, user: str, after: int, limit: int) -> list[Notification]:
    """The user's notifications newer than `after` that the editor has not shown, oldest first:
    those routed to the editor (a notification for email only is not the editor's to show)."""
    rows = (
        await session.execute(
            select(NotificationRow)
            .join(DeliveryRow, DeliveryRow.notification_id == NotificationRow.id)
            .where(
                NotificationRow.user == user,
                NotificationRow.id > after,
                NotificationRow.seen_at.is_(None),
                DeliveryRow.sink == SinkName.EDITOR.value,
            )
            .order_by(NotificationRow.id)
            .limit(limit)
        )
    ).scalars()
    return [to_notification(row, []) for row in rows]


def to_notification(row: NotificationRow, deliveries: list[DeliveryRow]) -> Notification:
    return Notification(
        id=row.id,
        user=row.user,
        kind=row.kind,
        title=row.title,
        body=row.body,
        environment=row.environment,
        actions=[Action.model_validate(a) for a in json.loads(row.actions or "[]")],
        created_at=row.created_at,
        seen_at=row.seen_at,
        deliveries=[
            Delivery(
                sink=d.sink,
                state=d.state,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at,
                sent_at=d.sent_at,
                reason=d.reason,
            )
            for d in deliveries
        ],
    )


async def read(fleet: Fleet, user: str, after: int) -> Inbox:
    now = fleet.clock.now()
    async with fleet.store.read() as session:
        shown = await announcements.for_user(session, fleet.config, now, user)
        news = await unseen(session, user, after, SHOWN)
    return Inbox(announcements=shown, notifications=news, digest=digest_of(shown))


async def wait_for_news(fleet: Fleet, user: str, asked: InboxQuery) -> Inbox:
    bell = fleet.bell
    deadline = time.monotonic() + asked.wait_seconds
    while True:
        rung = bell.armed()
        inbox = await read(fleet, user, asked.after)
        left = deadline - time.monotonic()
        if inbox.notifications or inbox.digest != asked.digest or left <= 0:
            return inbox
        pause = min(left, fleet.config.event_poll_seconds)
        async with fleet.store.read() as session:
            change = await announcements.next_change(session, fleet.clock.now())
        if change is not None:
            pause = min(pause, (change - fleet.clock.now()).total_seconds())
        started = time.monotonic()
        await bell.wait(rung, pause)
        # Commits come in bursts: do not read again within a few milliseconds of the last read.
        rest = MIN_RECHECK_SECONDS - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)
