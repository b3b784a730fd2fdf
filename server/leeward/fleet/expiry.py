"""Expiry warnings: before a temporary environment expires, its owner is told at each of the
fleet's lead times (`[notify] expiry_warning_hours`, e.g. 24 h and 1 h), once each, with the
extend action (leeward.fleet.notify).

Once each is the notification's key: the environment, the lead time and the expiry it warns
of. An extend moves the expiry, so the warnings of the new one are due again in their time. A
round that finds several lead times passed (an environment made with less time left than the
longest one, or a fleet that was down) sends only the nearest: one warning that says how long
is left, not a burst of stale ones."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from leeward.fleet.notify.outbox import notify
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.fleet import EnvironmentState, Lifespan
from leeward_protocol.notify import NotificationKind

log = logging.getLogger(__name__)

WARNED = [
    EnvironmentState.PROVISIONING.value,
    EnvironmentState.RUNNING.value,
    EnvironmentState.MIGRATING.value,
    EnvironmentState.STOPPED.value,  # stopped for being idle, it still expires
]


def due_lead(leads: list[float], expires_at: datetime, now: datetime) -> float | None:
    """The lead time (hours) whose warning is due now: the nearest of those passed; None when
    none has passed, or the environment has expired already (the sweep deletes it)."""
    if now >= expires_at:
        return None
    passed = [lead for lead in leads if now >= expires_at - timedelta(hours=lead)]
    return min(passed) if passed else None


def warning_key(env_id: str, lead: float, expires_at: datetime) -> str:
    return f"expiry:{env_id}:{lead:g}:{expires_at.isoformat()}"


async def warn(fleet: Fleet) -> int:
    """One round (the loop `expiry warnings`, one replica at a time): every owner whose
    temporary environment is within a lead time of its expiry is told, unless they were told
    of that lead time for that expiry. Returns how many warnings it wrote."""
    leads = sorted({lead for lead in fleet.config.notify.expiry_warning_hours if lead > 0})
    if not leads:
        return 0
    now = fleet.clock.now()
    written = 0
    async with fleet.store.write() as session:
        rows = (
            (
                await session.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.lifespan == Lifespan.TEMPORARY.value,
                        EnvironmentRow.owner.is_not(None),
                        EnvironmentRow.state.in_(WARNED),
                        EnvironmentRow.expires_at > now,
                        EnvironmentRow.expires_at <= now + timedelta(hours=max(leads)),
                    )
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            assert row.expires_at is not None and row.owner is not None
            lead = due_lead(leads, row.expires_at, now)
            if lead is None:
                continue
            told = await notify(
                session,
                fleet.config,
                now,
                user=row.owner,
                kind=NotificationKind.EXPIRY,
                environment=row,
                data={"lead_hours": lead, "expires_at": row.expires_at},
                key=warning_key(row.id, lead, row.expires_at),
            )
            if told is not None:
                written += 1
                log.info(
                    "environment %s (%s): expiry warning (%g h ahead) to %s",
                    row.id,
                    row.name,
                    lead,
                    row.owner,
                )
    return written
