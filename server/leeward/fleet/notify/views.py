"""What users and operators see and set of notifications: a user's own notifications (and
marking them seen, which is the editor's delivery), their preferences, and the sinks with
their pauses. Each function is one transaction; a refusal changes nothing."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from leeward.fleet.config import FleetConfig
from leeward.fleet.errors import Invalid, NotFound
from leeward.fleet.inbox import to_notification
from leeward.fleet.notify.outbox import configured, fleet_route
from leeward.fleet.store.models import (
    DeliveryRow,
    NotificationRow,
    PreferencesRow,
    SinkRow,
    UserRow,
)
from leeward_protocol.notify import (
    DeliveryState,
    Notification,
    NotificationKind,
    NotificationList,
    Preferences,
    SetPreferences,
    SinkList,
    SinkName,
    SinkStatus,
)


async def list_notifications(
    session: AsyncSession, user: str, *, unseen: bool = False, limit: int = 100
) -> NotificationList:
    """The user's notifications, newest first, each with its deliveries."""
    statement = select(NotificationRow).where(NotificationRow.user == user)
    if unseen:
        statement = statement.where(NotificationRow.seen_at.is_(None))
    rows = list(
        (await session.execute(statement.order_by(NotificationRow.id.desc()).limit(limit)))
        .scalars()
        .all()
    )
    return NotificationList(notifications=await with_deliveries(session, rows))


async def with_deliveries(session: AsyncSession, rows: list[NotificationRow]) -> list[Notification]:
    ids = [row.id for row in rows]
    deliveries: dict[int, list[DeliveryRow]] = {i: [] for i in ids}
    if ids:
        found = await session.execute(
            select(DeliveryRow).where(DeliveryRow.notification_id.in_(ids)).order_by(DeliveryRow.id)
        )
        for delivery in found.scalars():
            deliveries[delivery.notification_id].append(delivery)
    return [to_notification(row, deliveries[row.id]) for row in rows]


async def mark_seen(
    session: AsyncSession, now: datetime, user: str, ids: list[int]
) -> NotificationList:
    """The editor showed these: each is seen, and its editor delivery sent. Only the user's
    own: an id that is not theirs refuses the whole request, and nothing changes."""
    wanted = sorted(set(ids))
    rows = list(
        (
            await session.execute(
                select(NotificationRow).where(
                    NotificationRow.id.in_(wanted), NotificationRow.user == user
                )
            )
        )
        .scalars()
        .all()
    )
    missing = sorted(set(wanted) - {row.id for row in rows})
    if missing:
        listed = ", ".join(str(i) for i in missing[:5])
        raise NotFound(
            f"You have no notification {listed}: only your own can be marked seen "
            "(`leeward notifications` lists them)."
        )
    await session.execute(
        update(NotificationRow)
        .where(NotificationRow.id.in_(wanted), NotificationRow.seen_at.is_(None))
        .values(seen_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(DeliveryRow)
        .where(
            DeliveryRow.notification_id.in_(wanted),
            DeliveryRow.sink == SinkName.EDITOR.value,
            DeliveryRow.state != DeliveryState.SENT.value,
        )
        .values(
            state=DeliveryState.SENT.value,
            sent_at=now,
            next_attempt_at=None,
            attempts=DeliveryRow.attempts + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    for row in rows:
        await session.refresh(row)
    return NotificationList(
        notifications=await with_deliveries(session, sorted(rows, key=lambda r: -r.id))
    )


async def preferences(session: AsyncSession, config: FleetConfig, user: str) -> Preferences:
    """The user's address and the sinks each kind goes to: their choice, else the fleet's."""
    row = await session.get(PreferencesRow, user)
    chosen: dict[str, list[str]] = json.loads(row.routes) if row else {}
    routes = {
        kind: [SinkName(s) for s in chosen[kind.value]]
        if kind.value in chosen
        else fleet_route(config, kind)
        for kind in NotificationKind
    }
    return Preferences(
        user=user,
        email=row.email if row else None,
        routes=routes,
        chosen=[kind for kind in NotificationKind if kind.value in chosen],
    )


async def set_preferences(
    session: AsyncSession, config: FleetConfig, now: datetime, user: str, wanted: SetPreferences
) -> Preferences:
    """Replace the user's preferences: their address, and the sinks of the kinds they name
    (kinds not named follow the fleet's defaults). A sink the fleet has not configured, or email
    without an address, is refused: it would silently send nothing."""
    if await session.get(UserRow, user) is None:
        raise NotFound(f"There is no user {user!r}.")
    for kind, sinks in wanted.routes.items():
        for sink in sinks:
            if not configured(config, sink):
                usable = ", ".join(s.value for s in SinkName if configured(config, s))
                raise Invalid(
                    f"This fleet has no {sink.value} sink, so {kind.value} notifications "
                    f"cannot go there; choose from: {usable}.",
                    field=f"routes.{kind.value}",
                )
            if sink == SinkName.EMAIL and not wanted.email:
                raise Invalid(
                    f"{kind.value} notifications go to email, but no email address is given: "
                    "give one (`--email ADDRESS`) or choose other sinks.",
                    field="email",
                )
    routes = {
        kind.value: list(dict.fromkeys(s.value for s in sinks))
        for kind, sinks in wanted.routes.items()
    }
    row = await session.get(PreferencesRow, user)
    if row is None:
        row = PreferencesRow(user=user, routes="{}", updated_at=now)
        session.add(row)
    row.email = wanted.email
    row.routes = json.dumps(routes, sort_keys=True)
    row.updated_at = now
    await session.flush()
    return await preferences(session, config, user)


async def sink_statuses(session: AsyncSession, config: FleetConfig) -> SinkList:
    """Every sink: configured or not, paused or not, and its deliveries waiting and failed."""
    pauses = {row.name: row for row in (await session.execute(select(SinkRow))).scalars()}
    counts: dict[tuple[str, str], int] = {
        (sink, state): count
        for sink, state, count in (
            await session.execute(
                select(DeliveryRow.sink, DeliveryRow.state, func.count())
                .where(DeliveryRow.state != DeliveryState.SENT.value)
                .group_by(DeliveryRow.sink, DeliveryRow.state)
            )
        ).all()
    }
    statuses = []
    for sink in SinkName:
        pause = pauses.get(sink.value)
        statuses.append(
            SinkStatus(
                name=sink,
                configured=configured(config, sink),
                paused=bool(pause and pause.paused),
                paused_by=pause.paused_by if pause and pause.paused else None,
                reason=pause.reason if pause else "",
                pending=counts.get((sink.value, DeliveryState.PENDING.value), 0)
                + counts.get((sink.value, DeliveryState.LEASED.value), 0),
                failed=counts.get((sink.value, DeliveryState.FAILED.value), 0),
            )
        )
    return SinkList(sinks=statuses)


async def pause_sink(
    session: AsyncSession,
    config: FleetConfig,
    now: datetime,
    by: str,
    sink: SinkName,
    paused: bool,
    reason: str,
) -> SinkStatus:
    """Pause a sink (its deliveries wait, their attempts uncounted) or resume it (what waited
    is due again: the next round sends it)."""
    row = await session.get(SinkRow, sink.value)
    if row is None:
        row = SinkRow(name=sink.value, updated_at=now)
        session.add(row)
    row.paused = paused
    row.paused_by = by
    row.reason = reason
    row.updated_at = now
    await session.flush()
    statuses = await sink_statuses(session, config)
    return next(s for s in statuses.sinks if s.name == sink)
