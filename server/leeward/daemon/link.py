"""The daemon's link to the fleet: calls with a timeout and retries, and the user's environments
kept current from the fleet's event stream.

The stream is followed from the last event id seen, so a dropped connection (or a restarted
fleet) costs no event and repeats none. While the fleet cannot be reached, the last list known
is served, marked stale, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from leeward import __version__
from leeward.client.api import FleetClient, FleetUnreachable
from leeward.client.credentials import CredentialsError, load_credentials
from leeward.common.backoff import Backoff
from leeward.common.clock import Clock
from leeward.common.errors import FleetError
from leeward.daemon.retry import fleet_backoff, with_retries
from leeward_protocol.daemon import DaemonStatus, EnvironmentsResult, FleetLinkState
from leeward_protocol.fleet import Environment, EnvironmentState, EventType

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_ATTEMPTS = 3
"""Tries of one call before the daemon says the fleet cannot be reached."""


class NotSignedIn(FleetError):
    pass


class FleetLink:
    def __init__(
        self,
        *,
        fleet_url: str | None,
        credentials_file: Path,
        timeout: float,
        clock: Clock,
        on_environments: Callable[[EnvironmentsResult], None],
        on_status: Callable[[DaemonStatus], None],
        backoff: Callable[[], Backoff] = fleet_backoff,
    ) -> None:
        self.fleet_url = fleet_url
        self.credentials_file = credentials_file
        self.timeout = timeout
        self.clock = clock
        self.on_environments = on_environments
        self.on_status = on_status
        self._backoff = backoff
        self.client: FleetClient | None = None
        self.user: str | None = None
        self.state = FleetLinkState.SIGNED_OUT
        self.reason = "Not signed in: run `Leeward: Sign In` or `leeward login`."
        self.last_event_id: int | None = None
        self.events_received = 0
        self.resyncs = 0
        self.environments: dict[str, Environment] = {}
        self.fetched_at: datetime | None = None
        self.stale = True
        self._changed = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Sign in with the stored credentials (if any) and follow the event stream."""
        await self.close()
        # A new sign-in may be another fleet or user: nothing from before carries over.
        self.user, self.last_event_id, self.fetched_at = None, None, None
        self.environments = {}
        self.stale = True
        try:
            creds = load_credentials(self.credentials_file)
        except CredentialsError as exc:
            self._set_state(FleetLinkState.SIGNED_OUT, str(exc))
            return
        url = self.fleet_url or creds.fleet
        self.client = await FleetClient(url, creds.token, timeout=self.timeout).__aenter__()
        # Signed in, not connected yet: neither "signed out" nor a failure.
        self._set_state(FleetLinkState.CONNECTING, f"Connecting to the fleet at {url}.")
        self._follower = asyncio.get_running_loop().create_task(
            self._follow(), name="fleet event stream"
        )

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
            self.client = None

    # -- calls -----------------------------------------------------------------------------------

    async def call(
        self, work: Callable[[FleetClient], Awaitable[T]], *, attempts: int = CALL_ATTEMPTS
    ) -> T:
        """`work(client)` with retries (backoff and jitter) while the fleet cannot be reached.
        When it still cannot, the link says so (status, health) and the error is raised."""
        client = self.client
        if client is None:
            raise NotSignedIn(self.reason)
        try:
            result = await with_retries(
                lambda: work(client), clock=self.clock, attempts=attempts, backoff=self._backoff()
            )
        except FleetUnreachable as exc:
            self._set_state(FleetLinkState.UNREACHABLE, exc.message)
            raise
        except FleetError as exc:
            if exc.status == 401:
                self._set_state(FleetLinkState.SIGNED_OUT, exc.message)
            raise
        if self.state is FleetLinkState.UNREACHABLE:
            self._set_state(FleetLinkState.CONNECTED, "")  # it answers again
        return result

    # -- the environments ------------------------------------------------------------------------

    def snapshot(self) -> EnvironmentsResult:
        live = sorted(self.environments.values(), key=lambda e: (e.created_at, e.name))
        return EnvironmentsResult(
            environments=live,
            stale=self.stale,
            fetched_at=self.fetched_at,
            reason=self.reason if self.stale else "",
        )

    async def refresh(self) -> EnvironmentsResult:
        """The list from the fleet; the last one known, marked stale, when it cannot answer."""
        with contextlib.suppress(FleetUnreachable):
            listing = await self.call(lambda c: c.environments())
            self._replace(listing.environments)
        return self.snapshot()

    def remember(self, environment: Environment) -> None:
        """Take in an environment the fleet just returned (newer than what we have, or not)."""
        if self._apply(environment):
            self._notify_environments()

    async def wait_changed(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    async def find(self, ref: str) -> Environment:
        """The environment with this id or name, from the fleet (it is authoritative)."""
        environment = await self.call(lambda c: c.environment(ref))
        self.remember(environment)
        return environment

    def _replace(self, environments: list[Environment]) -> None:
        self.environments = {e.id: e for e in environments if e.state != EnvironmentState.DELETED}
        self.fetched_at = self.clock.now()
        self.stale = False
        self._notify_environments()

    def _apply(self, environment: Environment) -> bool:
        known = self.environments.get(environment.id)
        if known is not None and known.updated_at > environment.updated_at:
            return False  # an event older than the list we already have
        if environment.state == EnvironmentState.DELETED:
            return self.environments.pop(environment.id, None) is not None
        self.environments[environment.id] = environment
        return True

    def _notify_environments(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self.on_environments(self.snapshot())

    # -- the event stream ------------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = self._backoff()
        while True:
            client = self.client
            assert client is not None
            try:
                async for event in client.events(self.last_event_id):
                    backoff.reset()
                    if event.type is EventType.RESET:
                        listing = await client.environments()
                        self.resyncs += 1
                        self._replace(listing.environments)
                    elif event.environment is not None:
                        self.events_received += 1
                        self.remember(event.environment)
                    self.last_event_id = event.id
                    if self.state is not FleetLinkState.CONNECTED:
                        await self._connected(client)
                reason = f"The fleet at {client.url} closed the event stream."
            except FleetError as exc:
                if exc.status == 401:
                    self._set_state(FleetLinkState.SIGNED_OUT, exc.message)
                reason = exc.message
            if self.state is not FleetLinkState.SIGNED_OUT:
                self._set_state(FleetLinkState.UNREACHABLE, reason)
            delay = backoff.next()
            log.info("event stream lost (%s); again in %.1f s", reason, delay)
            await self.clock.sleep(delay)

    async def _connected(self, client: FleetClient) -> None:
        if self.user is None:
            with contextlib.suppress(FleetError):
                self.user = (await client.whoami()).user
        self._set_state(FleetLinkState.CONNECTED, "")
        if self.fetched_at is not None:
            # The list is current again once the stream has caught up; mark it so at once.
            self.stale = False
            self._notify_environments()

    def _set_state(self, state: FleetLinkState, reason: str) -> None:
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason = state, reason
        if state is not FleetLinkState.CONNECTED and not self.stale:
            self.stale = True
            self._notify_environments()
        if changed:
            log.info("fleet link: %s %s", state.value, reason)
            self.on_status(self.status())

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            version=__version__,
            fleet_url=self.client.url if self.client else self.fleet_url,
            user=self.user,
            fleet=self.state,
            reason=self.reason,
            last_event_id=self.last_event_id,
            events_received=self.events_received,
            resyncs=self.resyncs,
        )
