"""`notify()`: what every producer calls to tell a person something. It writes the notification
and one delivery per sink the user's preferences route its kind to, in the caller's session, so
that the notification exists exactly when the event that causes it does (the transactional
outbox); the delivery loop (delivery.py) sends them afterwards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.config import FleetConfig
from leeward.fleet.notify.templates import render
from leeward.fleet.store.db import mark
from leeward.fleet.store.models import (
    DeliveryRow,
    EnvironmentRow,
    NotificationRow,
    PreferencesRow,
)
from leeward_protocol.notify import (
    Action,
    ActionKind,
    DeliveryState,
    NotificationKind,
    SinkName,
)

DEFAULT_EXTEND_HOURS = 24
"""What an expiry warning's `extend` action adds when the producer does not say."""


NOTIFIED = "notification"
"""The mark of a transaction that wrote a notification: delivery starts when it commits."""


async def notify(
    session: AsyncSession,
    config: FleetConfig,
    now: datetime,
    *,
    user: str,
    kind: NotificationKind,
    environment: EnvironmentRow | None = None,
    data: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> NotificationRow | None:
    """Tell `user` something of `kind`, in the caller's transaction: the notification, rendered
    from the kind's templates with `data` and the environment's name, region and expiry, and one
    pending delivery per configured sink the user's preferences (or the fleet's defaults) route
    the kind to. With `key`, once only: a second call with the same key writes nothing and
    returns None (a producer that runs on every replica, or again after a restart, may call it
    freely)."""
    kind = NotificationKind(kind)  # a producer may pass the kind's string
    if key is not None and await _exists(session, key):
        return None
    values = _values(now, environment, data or {})
    rendered = render(kind, values)
    row_values = {
        "user": user,
        "kind": kind.value,
        "key": key,
        "title": rendered.title,
        "body": rendered.body,
        "environment": environment.name if environment else None,
        "environment_id": environment.id if environment else None,
        "actions": json.dumps([action.wire() for action in _actions(kind, environment, values)]),
        "data": json.dumps(to_jsonable_python(values, fallback=str)),
        "created_at": now,
    }
    # Checked above, but two replicas may pass that check at once: the insert itself yields
    # to the unique key (PostgreSQL waits for the other transaction, then does nothing), so a
    # race never becomes an error in the producer's transaction.
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(NotificationRow)
        .values(**row_values)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(NotificationRow.id)
    )
    notification_id = (await session.execute(statement)).scalar_one_or_none()
    if notification_id is None:
        return None
    for sink in await sinks_for(session, config, user, kind):
        session.add(
            DeliveryRow(
                notification_id=notification_id,
                sink=sink.value,
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                reason="",
                updated_at=now,
            )
        )
    await session.flush()
    mark(session, NOTIFIED)
    return await session.get(NotificationRow, notification_id)


async def _exists(session: AsyncSession, key: str) -> bool:
    found = await session.execute(select(NotificationRow.id).where(NotificationRow.key == key))
    return found.first() is not None


async def sinks_for(
    session: AsyncSession, config: FleetConfig, user: str, kind: NotificationKind
) -> list[SinkName]:
    """The sinks a notification of `kind` to `user` goes to: their choice for the kind, else
    the fleet's; less those the fleet has not configured (and email when the user gave no
    address: there is nowhere to send it)."""
    preferences = await session.get(PreferencesRow, user)
    routes: dict[str, list[str]] = json.loads(preferences.routes) if preferences else {}
    if kind.value in routes:
        chosen = [SinkName(sink) for sink in routes[kind.value]]
    else:
        chosen = fleet_route(config, kind)
    email = preferences.email if preferences else None
    return [
        sink
        for sink in dict.fromkeys(chosen)
        if configured(config, sink) and (sink != SinkName.EMAIL or email)
    ]


def fleet_route(config: FleetConfig, kind: NotificationKind) -> list[SinkName]:
    """The fleet's default sinks for `kind`: `[notify.routes]`, and the editor alone for a kind
    it leaves out (an operator listing only some kinds should not silence the others)."""
    return [SinkName(sink) for sink in config.notify.routes.get(kind, [SinkName.EDITOR])]


def configured(config: FleetConfig, sink: SinkName) -> bool:
    """Whether the fleet has somewhere to send `sink`'s deliveries."""
    if sink == SinkName.EDITOR:
        return True
    if sink == SinkName.EMAIL:
        return config.notify.email is not None
    if sink == SinkName.CHAT:
        return bool(config.notify.chat)
    return config.notify.tracker_url is not None


def _values(
    now: datetime, environment: EnvironmentRow | None, data: Mapping[str, Any]
) -> dict[str, Any]:
    """What the templates see: the environment's name, region, host and expiry, then the
    producer's data (which wins), and for an expiry the lead time in words."""
    values: dict[str, Any] = {}
    if environment is not None:
        values.update(
            environment=environment.name,
            region=environment.region,
            host=environment.host,
            expires_at=environment.expires_at,
        )
    values.update(data)
    values.setdefault("hours", DEFAULT_EXTEND_HOURS)
    expires_at = values.get("expires_at")
    if "lead" not in values and isinstance(expires_at, datetime):
        values["lead"] = _duration(expires_at - now)
    return values


def _duration(left: timedelta) -> str:
    minutes = max(0, round(left.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(minutes / 60)
    if hours < 48:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    days = round(hours / 24)
    return f"{days} days"


def _actions(
    kind: NotificationKind, environment: EnvironmentRow | None, values: Mapping[str, Any]
) -> list[Action]:
    """The buttons the editor shows, each with the same in a terminal."""
    if environment is None:
        return []
    name = environment.name
    if kind == NotificationKind.EXPIRY:
        hours = values["hours"]
        return [
            Action(
                kind=ActionKind.EXTEND,
                label=f"Extend by {hours} hours",
                environment=name,
                command=f"leeward extend {name} --hours {hours}",
            )
        ]
    if kind == NotificationKind.BACKUP_FAILED:
        return [
            Action(
                kind=ActionKind.BACKUP_NOW,
                label="Back up now",
                environment=name,
                command=f"leeward backup now {name}",
            )
        ]
    if kind == NotificationKind.DECOMMISSION and not values.get("container"):
        return [
            Action(
                kind=ActionKind.MOVE,
                label="Move it now",
                environment=name,
                command=f"leeward move {name}",
            )
        ]
    if kind in (NotificationKind.IDLE_STOP, NotificationKind.DORMANT_DELETE):
        return [
            Action(
                kind=ActionKind.START,
                label="Start it",
                environment=name,
                command=f"leeward start {name}",
            )
        ]
    return []
