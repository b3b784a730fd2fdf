"""`GET /v1/inbox` through the real fleet: the long poll answers at a scheduled announcement's
start, at once for a notification written meanwhile (woken by the commit, not by its timeout),
when a dismissal changes the digest, and never shows one user what is another's."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from leeward.fleet.notify.outbox import notify
from leeward_protocol.notify import NotificationKind
from tests.conftest import until

LONG = 20.0
"""A long poll's wait: every answer below must come well before it."""


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def poll(api: Any, after: int, digest: str, wait: float) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    status, body = await api.call(
        "GET", f"/v1/inbox?after={after}&digest={digest}&waitSeconds={wait:g}"
    )
    assert status == 200, body
    return body, time.monotonic() - started


async def test_the_inbox_long_poll_answers_at_news_and_only_with_the_users_own(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url)
    # Past LONG: only the bell (this replica's commits) can wake a poll before its end.
    config.event_poll_seconds = 60.0
    async with start_fleet(config) as f:
        bob = await f.user("bob")
        first, _ = await poll(f.api, 0, "", 0)
        assert first["announcements"] == [] and first["notifications"] == []
        empty = first["digest"]

        # Nothing new: a short poll waits its time out and says so with the same digest.
        same, took = await poll(f.api, 0, empty, 0.3)
        assert same["digest"] == empty and took >= 0.3

        # Scheduled 1.5 s ahead, for alice only: the waiting poll answers at its start.
        starts = datetime.now(UTC) + timedelta(seconds=1.5)
        status, posted = await f.admin.call(
            "POST",
            "/v1/admin/announcements",
            {"text": "Maintenance <b>tonight</b>", "users": ["alice"], "startsAt": iso(starts)},
        )
        assert status == 201, posted
        news, took = await poll(f.api, 0, empty, LONG)
        assert datetime.now(UTC) >= starts
        assert took < LONG / 2, took
        assert [a["id"] for a in news["announcements"]] == [posted["id"]]
        assert news["announcements"][0]["text"] == "Maintenance <b>tonight</b>"
        assert news["digest"] != empty
        for_bob, _ = await poll(bob, 0, "", 0)
        assert for_bob["announcements"] == []

        # A notification written while a poll waits wakes it at once.
        async def later() -> None:
            # Written once the poll is parked on the bell: only the commit can wake it.
            await until(lambda: f.fleet.bell.waiting > 0, "the poll waiting on the bell")
            async with f.fleet.store.write() as session:
                await notify(
                    session,
                    f.fleet.config,
                    f.fleet.clock.now(),
                    user="alice",
                    kind=NotificationKind.BACKUP_FAILED,
                    data={"message": "the host did not answer"},
                )

        writer = asyncio.create_task(later())
        woken, took = await poll(f.api, 0, news["digest"], LONG)
        await writer
        assert took < LONG / 2, took
        [note] = woken["notifications"]
        assert note["kind"] == "backup-failed" and note["user"] == "alice"
        for_bob, _ = await poll(bob, 0, for_bob["digest"], 0)
        assert for_bob["notifications"] == []

        # Past `after`, it is not news any more; seen, it is gone from the inbox.
        quiet, took = await poll(f.api, note["id"], woken["digest"], 0.3)
        assert quiet["notifications"] == [] and took >= 0.3
        status, _ = await f.api.call("POST", "/v1/notifications/seen", {"ids": [note["id"]]})
        assert status == 200
        seen, _ = await poll(f.api, 0, woken["digest"], 0)
        assert seen["notifications"] == []

        # A dismissal changes the digest: a poll holding the old one answers at once.
        status, _ = await f.api.call(
            "POST", f"/v1/announcements/{posted['id']}/dismiss", {"revision": posted["revision"]}
        )
        assert status == 200
        dismissed, took = await poll(f.api, note["id"], woken["digest"], LONG)
        assert took < LONG / 2, took
        assert dismissed["announcements"][0]["dismissed"] is True
        assert dismissed["digest"] != woken["digest"]


async def test_bad_inbox_queries_are_refused_with_a_sentence(
    start_fleet, config_factory, sqlite_url
):
    async with start_fleet(config_factory(sqlite_url)) as f:
        for bad in ("waitSeconds=61", "waitSeconds=-1", "after=-1", "after=x"):
            status, body = await f.api.call("GET", f"/v1/inbox?{bad}")
            assert status == 422, (bad, body)
            assert body["error"]["message"].endswith("."), body
