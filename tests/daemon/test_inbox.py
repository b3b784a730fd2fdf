"""The daemon's inbox watcher against a small stand-in of the fleet's inbox (the boundary): the
announcements and notifications reach the client, each notification once; a long poll waits
with the digest and `after` of the last answer; a fleet that is down, answers garbage or refuses
costs a backoff on the injected clock, never the watcher; a seen notification is told to the
fleet, later when it cannot be reached; a new daemon shows every unseen notification again.

The real fleet and the real daemon over stdio: tests/daemon/test_telling.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from leeward.client.api import FleetClient
from leeward.common.backoff import NO_JITTER, Backoff
from leeward.common.clock import ManualClock
from leeward.daemon import inbox as inbox_module
from leeward.daemon.inbox import InboxWatcher
from leeward.daemon.link import FleetLink
from leeward_protocol.base import Resource
from leeward_protocol.daemon import FleetLinkState
from leeward_protocol.notify import (
    Action,
    ActionKind,
    Announcement,
    AnnouncementList,
    Notification,
    NotificationKind,
    NotificationList,
    Scope,
    Severity,
)

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def announcement(id: int, text: str = "Maintenance tonight", **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": id,
        "text": text,
        "severity": Severity.WARNING,
        "scope": Scope(regions=["north"]),
        "starts_at": T0,
        "revision": 1,
        "created_by": "ops",
        "created_at": T0,
        "updated_at": T0,
        "active": True,
        **kw,
    }
    return Announcement(**fields).wire()


def notification(id: int, kind: NotificationKind = NotificationKind.EXPIRY) -> dict[str, Any]:
    return Notification(
        id=id,
        user="alice",
        kind=kind,
        title=f"box expires in 1 hour ({id})",
        body="Extend it with `leeward extend box`.",
        environment="box",
        actions=[Action(kind=ActionKind.EXTEND, label="Extend", environment="box")],
        created_at=T0,
    ).wire()


class StandInFleet:
    """`GET /v1/inbox` as the contract says (a long poll on `after` and `digest`), `POST
    /v1/notifications/seen` and `POST /v1/announcements/{id}/dismiss`; `down` answers 503,
    `garbage` an answer that is not an Inbox."""

    def __init__(self) -> None:
        self.announcements: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.seen: set[int] = set()
        self.dismissed: dict[int, int] = {}
        self.asked: list[dict[str, str]] = []
        self.seen_posts: list[list[int]] = []
        self.down = False
        self.garbage = False
        self.delay = 0.0
        self._news = asyncio.Event()

    def changed(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    def _visible(self) -> list[dict[str, Any]]:
        return [
            {**a, "dismissed": self.dismissed.get(a["id"]) == a["revision"]}
            for a in self.announcements
        ]

    def _digest(self) -> str:
        return str(hash(repr((self._visible(), sorted(self.seen)))))

    async def inbox(self, request: web.Request) -> web.Response:
        self.asked.append(dict(request.query))
        await asyncio.sleep(self.delay)  # a slow fleet, served: the client's deadline is tested
        if self.down:
            return web.Response(status=503, text="restarting")
        if self.garbage:
            return web.json_response({"announcements": "no"})
        after = int(request.query.get("after", "0"))
        digest = request.query.get("digest", "")
        wait = float(request.query.get("waitSeconds", "0"))

        def news() -> list[dict[str, Any]]:
            return [n for n in self.notifications if n["id"] > after and n["id"] not in self.seen]

        if not news() and digest == self._digest() and wait > 0:
            news_event = self._news
            try:
                async with asyncio.timeout(wait):
                    await news_event.wait()
            except TimeoutError:
                pass
        return web.json_response(
            {"announcements": self._visible(), "notifications": news(), "digest": self._digest()}
        )

    async def seen_route(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="restarting")
        ids = (await request.json())["ids"]
        self.seen_posts.append(ids)
        if any(i > 1000 for i in ids):
            return web.json_response(
                {"error": {"code": "not_found", "message": "No notification 5000 of yours."}},
                status=404,
            )
        self.seen.update(ids)
        self.changed()
        return web.json_response({})

    async def dismiss(self, request: web.Request) -> web.Response:
        ident = int(request.match_info["id"])
        self.dismissed[ident] = (await request.json())["revision"]
        self.changed()
        return web.json_response(next(a for a in self._visible() if a["id"] == ident))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/inbox", self.inbox)
        app.router.add_post("/v1/notifications/seen", self.seen_route)
        app.router.add_post("/v1/announcements/{id}/dismiss", self.dismiss)
        return app


class Client:
    """What the watcher sends the editor, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Resource]] = []

    def __call__(self, method: str, payload: Resource) -> None:
        self.sent.append((method, payload))

    def announcements(self) -> list[AnnouncementList]:
        return [p for m, p in self.sent if isinstance(p, AnnouncementList)]

    def notifications(self) -> list[int]:
        return [
            n.id for m, p in self.sent if isinstance(p, NotificationList) for n in p.notifications
        ]


@pytest.fixture
async def fleet(aiohttp_server: AiohttpServer) -> tuple[StandInFleet, str]:
    stand_in = StandInFleet()
    server = await aiohttp_server(stand_in.app())
    return stand_in, str(server.make_url("/"))


async def watching(
    url: str, clock: ManualClock, client: Client, tmp_path: Path, wait: float = 5.0
) -> tuple[InboxWatcher, FleetLink]:
    link = FleetLink(
        fleet_url=url,
        credentials_file=tmp_path / "none.toml",
        timeout=5.0,
        clock=clock,
        on_environments=lambda _: None,
        on_status=lambda _: None,
    )
    link.client = await FleetClient(url, "token", timeout=5.0).__aenter__()
    link.state = FleetLinkState.CONNECTED
    watcher = InboxWatcher(
        link,
        clock,
        client,
        wait_seconds=wait,
        backoff=lambda: Backoff(base=0.5, cap=30.0, jitter=NO_JITTER),
    )
    await watcher.start()
    return watcher, link


async def until(
    clock: ManualClock, probe: Callable[[], Any], what: str, *, step: float = 0.0
) -> Any:
    """Let the loop run (moving the clock by `step` each turn) until `probe()` holds; 10 s."""
    async with asyncio.timeout(10):
        while not (found := probe()):
            clock.advance(step)
            await asyncio.sleep(0.01)
    assert found, what
    return found


async def stop(watcher: InboxWatcher, link: FleetLink) -> None:
    await watcher.close()
    await link.close()


async def test_news_reaches_the_editor_once_and_a_long_poll_waits_on_what_it_has(
    fleet: tuple[StandInFleet, str], tmp_path: Path
) -> None:
    stand_in, url = fleet
    stand_in.announcements = [announcement(1)]
    stand_in.notifications = [notification(1), notification(2)]
    clock, client = ManualClock(T0), Client()
    watcher, link = await watching(url, clock, client, tmp_path)
    try:
        await until(clock, lambda: client.notifications() == [1, 2], "both notifications")
        [first] = client.announcements()
        assert [a.text for a in first.announcements] == ["Maintenance tonight"]
        assert stand_in.asked[0] == {"after": "0", "waitSeconds": "5"}
        # The next call waits with what it has: after the newest id, the digest.
        await until(clock, lambda: len(stand_in.asked) >= 2, "a second (waiting) call")
        assert stand_in.asked[1]["after"] == "2"
        assert stand_in.asked[1]["digest"] == stand_in._digest()
        assert sorted(watcher.pending) == [1, 2]

        # A new announcement and a new notification wake the long poll: the list again, whole,
        # and only the new notification.
        stand_in.announcements.append(announcement(2, "Region north drains at 18:00"))
        stand_in.notifications.append(notification(3))
        stand_in.changed()
        await until(clock, lambda: client.notifications() == [1, 2, 3], "the third", step=1)
        assert [a.id for a in client.announcements()[-1].announcements] == [1, 2]

        # Shown: the fleet is told; nothing is sent again.
        told = await watcher.seen([1, 2, 3])
        assert told.told and stand_in.seen == {1, 2, 3} and watcher.pending == {}
        dismissed = await watcher.dismiss(2, 1)
        assert dismissed.dismissed
        assert [a.dismissed for a in client.announcements()[-1].announcements] == [False, True]
        lists, asked = len(client.announcements()), len(stand_in.asked)
        await until(clock, lambda: len(stand_in.asked) >= asked + 2, "more calls", step=1)
        assert client.notifications() == [1, 2, 3], "each notification once"
        assert len(client.announcements()) == lists, "an unchanged list is not sent again"
    finally:
        await stop(watcher, link)


async def test_a_fleet_down_or_talking_nonsense_costs_a_backoff_and_seen_is_told_later(
    fleet: tuple[StandInFleet, str], tmp_path: Path
) -> None:
    stand_in, url = fleet
    stand_in.notifications = [notification(7)]
    clock, client = ManualClock(T0), Client()
    watcher, link = await watching(url, clock, client, tmp_path)
    try:
        await until(clock, lambda: client.notifications() == [7], "the notification")
        stand_in.down = True
        stand_in.changed()  # the waiting call answers; the next ones fail
        await until(clock, lambda: watcher.failures >= 1, "a failed call", step=0.1)
        # Backoff on the injected clock: 0.5, 1, 2, 4 ... up to 30 s; no call while it waits.
        await until(clock, lambda: clock.sleeping() == 1, "the watcher parked on its backoff")
        asked = len(stand_in.asked)
        clock.advance(0.4)
        assert clock.sleeping() == 1, "the first delay (0.5 s) has not passed: still waiting"
        assert len(stand_in.asked) == asked, "no call before the first delay has passed"
        for _ in range(12):
            before = len(stand_in.asked)
            clock.advance(30)
            # Each delay passed: one more call, refused, then parked on the next delay.
            await until(
                clock,
                lambda n=before: len(stand_in.asked) > n and clock.sleeping() == 1,
                "another call after the delay",
            )
        assert watcher.failures >= 6
        assert watcher._task is not None and not watcher._task.done(), "the watcher goes on"

        # The client showed it meanwhile: kept, and told once the fleet answers again.
        result = await watcher.seen([7])
        assert not result.told and watcher.unconfirmed == {7}
        stand_in.down, stand_in.garbage = False, True
        failures = watcher.failures
        await until(clock, lambda: watcher.failures > failures, "garbage is a failure", step=1)
        stand_in.garbage = False
        await until(clock, lambda: stand_in.seen == {7}, "told after the fleet is back", step=5)
        assert watcher.unconfirmed == set() and watcher.failures == 0
        assert client.notifications() == [7]

        # A refusal (not someone else's notification to mark) is the client's answer, at once.
        with pytest.raises(Exception, match="No notification 5000"):
            await watcher.seen([5000])
        assert watcher.unconfirmed == set()
    finally:
        await stop(watcher, link)


async def test_a_new_daemon_shows_what_was_missed_and_only_that(
    fleet: tuple[StandInFleet, str], tmp_path: Path
) -> None:
    stand_in, url = fleet
    stand_in.notifications = [notification(1), notification(2)]
    clock = ManualClock(T0)
    first_client = Client()
    watcher, link = await watching(url, clock, first_client, tmp_path)
    try:
        await until(clock, lambda: first_client.notifications() == [1, 2], "both")
        await watcher.seen([1])  # the window closed before it showed the second one
    finally:
        await stop(watcher, link)
    stand_in.notifications.append(notification(3, NotificationKind.BACKUP_FAILED))
    second_client = Client()
    watcher, link = await watching(url, clock, second_client, tmp_path)
    try:
        await until(clock, lambda: second_client.notifications() == [2, 3], "the missed ones")
        assert stand_in.asked[-1]["after"] in {"0", "3"}
    finally:
        await stop(watcher, link)


async def test_the_long_poll_has_a_deadline_of_its_own(
    fleet: tuple[StandInFleet, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet (or a proxy) that holds the call past its wait and margin: given up, tried again."""
    stand_in, url = fleet
    monkeypatch.setattr(inbox_module, "DEADLINE_MARGIN", 0.2)
    clock, client = ManualClock(T0), Client()
    stand_in.delay = 0.5  # for a call that said 0.05 s: past its deadline of 0.25 s
    watcher, link = await watching(url, clock, client, tmp_path, wait=0.05)
    try:
        await until(clock, lambda: watcher.failures >= 1, "the call given up at its deadline")
        assert client.sent == []
    finally:
        await stop(watcher, link)
