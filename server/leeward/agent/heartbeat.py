"""Heartbeats: the agent tells the fleet it is alive, every few seconds, whatever happens.

A fleet that is down, slow or refusing never stops or blocks the agent: each beat has a
deadline, failures are logged and retried with backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from leeward.agent.fleet import AgentFleet
from leeward.common.backoff import SPREAD, Backoff, worth_telling
from leeward.common.errors import FleetError

log = logging.getLogger("leeward.agent.heartbeat")

MAX_BACKOFF_SECONDS = 60.0


class Heartbeat:
    """The loop. Each beat reads the agent's live state: `sessions()`, `activity()` (VS Code's
    sessions among them, and seconds since the last input: what keeps the environment from an
    idle stop), and the fleet's URL and token through `fleet`."""

    def __init__(
        self,
        fleet: AgentFleet,
        sessions: Callable[[], int],
        interval: Callable[[], float],
        *,
        agent_version: str,
        activity: Callable[[], tuple[int, float | None]] = lambda: (0, None),
    ) -> None:
        self._fleet = fleet
        self._sessions = sessions
        self._activity = activity
        self._agent_version = agent_version
        self._interval = interval
        self._adopted: float | None = None
        self._failures = 0
        self._wake = asyncio.Event()

    def reset(self) -> None:
        """The config changed (new token or fleet URL): beat soon with it. Within a second, at
        random: when many containers are claimed at once, their first beats spread out."""
        self._adopted = None
        self._failures = 0
        loop = asyncio.get_running_loop()
        loop.call_later(random.uniform(0.0, 1.0), self._wake.set)  # noqa: S311

    @property
    def interval(self) -> float:
        return self._adopted if self._adopted is not None else self._interval()

    async def beat_once(self) -> None:
        within = min(10.0, 2 * self.interval + 1)
        editors, idle_seconds = self._activity()
        ack = await self._fleet.heartbeat(
            sessions=self._sessions(),
            agent_version=self._agent_version,
            within=within,
            editor_sessions=editors,
            idle_seconds=idle_seconds,
        )
        if 0 < ack.interval_seconds <= 3600:
            self._adopted = ack.interval_seconds

    async def run(self) -> None:
        while True:
            try:
                await self.beat_once()
                if self._failures:
                    log.info("heartbeat: the fleet answers again after %d failures", self._failures)
                self._failures = 0
                delay = self.interval
            except FleetError as exc:
                self._failures += 1
                # Log the first failures, then one in ten: a long fleet outage is not a flood.
                if worth_telling(self._failures):
                    log.warning("heartbeat failed (%d in a row): %s", self._failures, exc)
                # From the interval, doubling, up to a minute (or the interval, if longer).
                backoff = Backoff(
                    base=self.interval,
                    cap=max(self.interval, MAX_BACKOFF_SECONDS),
                    jitter=SPREAD,
                )
                delay = backoff.delay(self._failures - 1)
            except Exception:
                self._failures += 1
                log.exception("heartbeat failed unexpectedly")
                delay = self.interval
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
