"""What the editor shows a user of what the fleet tells them: the active announcements that
concern them (banners) and their notifications (an expiry ahead, a failed backup, ...).

A task beside the event stream long-polls the fleet's inbox (`GET /v1/inbox`), each call with a
deadline of its own, and sends the client `leeward/announcements` (the whole list, dismissed
ones flagged) when it changes and `leeward/notifications` (the new ones) when some arrive. A
fleet that does not answer, refuses or says something this daemon does not understand costs a
backoff, never the daemon: requests go on being served meanwhile.

Notifications survive a closed window: a new daemon asks for every unseen one (`after=0`), and
the fleet marks one seen (its editor delivery sent) only when the client says it showed it
(`leeward/notifications/seen`). A confirmation the fleet cannot take yet is kept and told again
after the next answer of the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from leeward.common.backoff import Backoff, worth_telling
from leeward.common.clock import Clock
from leeward.common.errors import FleetError
from leeward.daemon.link import FleetLink, NotSignedIn
from leeward.daemon.retry import retryable
from leeward_protocol.base import Resource
from leeward_protocol.daemon import SeenResult
from leeward_protocol.notify import (
    Announcement,
    AnnouncementList,
    Inbox,
    Notification,
    NotificationList,
)

if TYPE_CHECKING:
    from leeward.client.api import FleetClient

log = logging.getLogger(__name__)

LONG_POLL_SECONDS = 50.0
"""How long one inbox call may wait for news: below the usual 60 s idle cut of proxies."""

DEADLINE_MARGIN = 15.0
"""Beyond the long poll's wait, how long an answer may take before the call is given up."""

QUICK_ANSWER = 1.0
"""An answer with nothing new that came sooner than this (a fleet that does not wait) is
followed by a pause of this long, so that such a fleet is not asked in a tight loop."""

SEEN_BATCH = 1000
"""The most ids one `POST /v1/notifications/seen` takes."""


def inbox_backoff() -> Backoff:
    """Between inbox calls that failed: half a second, doubling up to 30 s (an announcement
    waits at most that long after the fleet is back; many daemons do not rush it)."""
    return Backoff(base=0.5, cap=30.0)


Notify = Callable[[str, Resource], None]


class InboxWatcher:
    def __init__(
        self,
        link: FleetLink,
        clock: Clock,
        notify: Notify,
        *,
        wait_seconds: float = LONG_POLL_SECONDS,
        backoff: Callable[[], Backoff] = inbox_backoff,
    ) -> None:
        self.link = link
        self.clock = clock
        self.notify = notify
        self.wait_seconds = wait_seconds
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.announcements: list[Announcement] = []
        self.fetched = False
        """Whether the inbox answered once since the start (or the last sign-in)."""
        self.after = 0
        """The newest notification id sent to the client."""
        self.digest = ""
        self.pending: dict[int, Notification] = {}
        """Sent to the client, not yet confirmed shown."""
        self.unconfirmed: set[int] = set()
        """Shown, but the fleet could not be told yet."""
        self.failures = 0
        self.answers = 0
        self._answered = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the inbox of the link's (new) client from scratch: a new sign-in may be
        another user, and a new daemon shows every unseen notification again."""
        await self.close()
        self._reset()
        if self.link.client is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="fleet inbox")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- the long poll ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        backoff = self._backoff()
        while True:
            client = self.link.client
            if client is None:
                return  # signed out; a sign-in starts a new watch
            started = self.clock.monotonic()
            try:
                async with asyncio.timeout(self.wait_seconds + DEADLINE_MARGIN):
                    inbox = await client.inbox(self.after, self.digest, self.wait_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the fleet's trouble is never the daemon's end
                self.failures += 1
                delay = backoff.next()
                if worth_telling(self.failures):
                    why = exc.message if isinstance(exc, FleetError) else repr(exc)
                    log.info("inbox: %s; again in %.1f s", why or type(exc).__name__, delay)
                await self.clock.sleep(delay)
                continue
            backoff.reset()
            self.failures = 0
            changed = self._take(inbox)
            await self._tell_seen(client)
            if not changed and self.clock.monotonic() - started < QUICK_ANSWER:
                await self.clock.sleep(QUICK_ANSWER)

    def _take(self, inbox: Inbox) -> bool:
        """Take in one answer of the inbox; whether it brought anything new."""
        self.answers += 1
        first = not self.fetched
        self.fetched = True
        self.digest = inbox.digest
        changed = False
        # The notifications first: once a client has an answer's announcements, it has its
        # notifications too.
        new = [
            n
            for n in inbox.notifications
            if n.id > self.after and n.id not in self.pending and n.id not in self.unconfirmed
        ]
        if new:
            self.after = max(n.id for n in new)
            self.pending.update((n.id, n) for n in new)
            self.notify("leeward/notifications", NotificationList(notifications=new))
            changed = True
        if first or inbox.announcements != self.announcements:
            self.announcements = list(inbox.announcements)
            self.notify("leeward/announcements", self.announcement_list())
            changed = True
        self._answered.set()
        return changed

    def announcement_list(self) -> AnnouncementList:
        return AnnouncementList(announcements=self.announcements)

    # -- what the client asks --------------------------------------------------------------------

    async def current(self) -> AnnouncementList:
        """The announcements as last known; before the first answer, asked of the fleet now."""
        if not self.fetched:
            client = self._client()
            inbox = await self.link.call(lambda c: c.inbox(self.after, "", 0))
            if self.link.client is client:
                self._take(inbox)
        return self.announcement_list()

    async def dismiss(self, announcement: int, revision: int) -> Announcement:
        dismissed = await self.link.call(lambda c: c.dismiss_announcement(announcement, revision))
        # Shown here at once; other windows learn it from their own inbox (its digest changed).
        if any(a.id == dismissed.id for a in self.announcements):
            self.announcements = [
                dismissed if a.id == dismissed.id else a for a in self.announcements
            ]
            self.notify("leeward/announcements", self.announcement_list())
        return dismissed

    async def seen(self, ids: list[int]) -> SeenResult:
        """The client showed these: tell the fleet now, or after its next answer when it cannot
        be reached (a refusal, such as someone else's notification, is the client's answer)."""
        for notification_id in ids:
            self.pending.pop(notification_id, None)
        self.unconfirmed.update(ids)
        client = self._client()
        try:
            await _post_seen(client, sorted(set(ids)))
        except FleetError as exc:
            if retryable(exc):
                log.info("inbox: the fleet cannot take seen notifications now (%s)", exc.message)
                return SeenResult(ids=ids, told=False)
            self.unconfirmed.difference_update(ids)
            raise
        self.unconfirmed.difference_update(ids)
        return SeenResult(ids=ids, told=True)

    async def _tell_seen(self, client: FleetClient) -> None:
        if not self.unconfirmed:
            return
        ids = sorted(self.unconfirmed)
        try:
            await _post_seen(client, ids)
        except FleetError as exc:
            if retryable(exc):
                return  # again after the next answer
            log.warning("inbox: the fleet refused seen notifications %s: %s", ids, exc.message)
        self.unconfirmed.difference_update(ids)

    async def wait_answered(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._answered.wait()

    def _client(self) -> FleetClient:
        client = self.link.client
        if client is None:
            raise NotSignedIn(self.link.reason)
        return client


async def _post_seen(client: FleetClient, ids: list[int]) -> None:
    for start in range(0, len(ids), SEEN_BATCH):
        await client.notifications_seen(ids[start : start + SEEN_BATCH])
