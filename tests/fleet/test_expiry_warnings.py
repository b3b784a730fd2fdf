"""Expiry warnings with a manual clock: a real fleet and real agents, the warning loop's round
run by hand (`expiry.warn`) as the clock moves. At 24 h and 1 h before an expiry, one
notification each, never twice (several rounds, a fleet restart in between); an extend arms
them again; an environment made with less time left than the longest lead time gets only the
nearest one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from leeward.common.clock import ManualClock
from leeward.fleet import expiry
from leeward.fleet.expiry import due_lead
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import NotificationRow
from leeward_protocol.notify import NotificationKind


async def warnings_of(fleet: Fleet, env_id: str) -> list[NotificationRow]:
    async with fleet.store.read() as session:
        rows = await session.execute(
            select(NotificationRow)
            .where(
                NotificationRow.environment_id == env_id,
                NotificationRow.kind == NotificationKind.EXPIRY.value,
            )
            .order_by(NotificationRow.id)
        )
        return list(rows.scalars())


def leads(rows: list[NotificationRow]) -> list[float]:
    return [json.loads(r.data)["lead_hours"] for r in rows]


async def rounds(fleet: Fleet, times: int = 3) -> int:
    """The loop's round, `times` over; how many warnings they wrote in all."""
    return sum([await expiry.warn(fleet) for _ in range(times)])


async def create(api: Any, name: str, hours: int) -> dict[str, Any]:
    status, env = await api.call(
        "POST",
        "/v1/environments",
        {"kind": "container", "profile": "web", "name": name, "hours": hours},
    )
    assert status in (201, 202), env
    return env


async def test_warnings_at_each_lead_time_once_and_again_after_an_extend(
    start_fleet, config_factory, database_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    config = config_factory(database_url)
    config.notify.expiry_warning_hours = [24.0, 1.0]
    config.idle.containers.stop_after_minutes = None  # this test is about expiry only
    async with start_fleet(config, clock=clock, background=False) as f:
        long = await create(f.api, "long", 30)
        short = await create(f.api, "short", 2)
        await f.api.wait_state(long["id"], {"running"})
        await f.api.wait_state(short["id"], {"running"})

        # `short` has 2 h left: the 24 h lead passed at its creation, and only that nearest
        # one is sent now (saying 2 hours); `long` has 30 h: nothing yet.
        assert await rounds(f.fleet) == 1
        (first,) = await warnings_of(f.fleet, short["id"])
        assert json.loads(first.data)["lead_hours"] == 24
        assert "2 hours" in first.body and "leeward extend short" in first.body
        assert json.loads(first.actions)[0]["command"] == "leeward extend short --hours 24"
        assert await warnings_of(f.fleet, long["id"]) == []

        clock.advance(timedelta(hours=6, minutes=1))  # `long`: 24 h left
        assert await rounds(f.fleet) == 1
        assert leads(await warnings_of(f.fleet, long["id"])) == [24]
        assert first.user == "alice"

    # A restart of the fleet in between: nothing is sent twice.
    async with start_fleet(config, clock=clock, background=False) as f:
        assert await rounds(f.fleet) == 0
        clock.advance(timedelta(hours=23))  # `long`: 59 min left
        assert await rounds(f.fleet) == 1
        assert leads(await warnings_of(f.fleet, long["id"])) == [24, 1]
        assert await rounds(f.fleet) == 0

        # An extend moves the expiry: its warnings are armed again, each in its time.
        status, extended = await f.api.call("POST", "/v1/environments/long/extend", {"hours": 24})
        assert status == 200, extended
        assert await rounds(f.fleet) == 0  # 24 h 59 min left: no lead time has passed
        clock.advance(timedelta(hours=1))
        assert await rounds(f.fleet) == 1
        warned = await warnings_of(f.fleet, long["id"])
        assert leads(warned) == [24, 1, 24]
        assert len({w.key for w in warned}) == 3
        clock.advance(timedelta(hours=23))
        assert await rounds(f.fleet) == 1
        assert leads(await warnings_of(f.fleet, long["id"])) == [24, 1, 24, 1]


def test_the_nearest_passed_lead_time_is_the_one_due():
    expires = datetime(2026, 6, 1, 12, tzinfo=UTC)
    at = [24.0, 1.0]
    assert due_lead(at, expires, expires - timedelta(hours=30)) is None
    assert due_lead(at, expires, expires - timedelta(hours=24)) == 24
    assert due_lead(at, expires, expires - timedelta(hours=2)) == 24
    assert due_lead(at, expires, expires - timedelta(minutes=59)) == 1
    assert due_lead(at, expires, expires - timedelta(minutes=1)) == 1
    assert due_lead(at, expires, expires) is None  # expired: the sweep's, not a warning's
