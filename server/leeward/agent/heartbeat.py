"""Heartbeats: the agent tells the fleet it is alive, every few seconds, whatever happens.

A fleet that is down, slow or refusing never stops or blocks the agent: each beat has a
deadline, failures are logged and retried with backoff and jitter. The body is
`leeward_protocol.fleet.AgentHeartbeat` on the wire (tests check it against the model); it is
written out here so the agent does not load every protocol model (memory per environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from leeward.agent.fleetapi import request_json
from leeward.common.backoff import SPREAD, Backoff, worth_telling
from leeward.common.errors import FleetError

log = logging.getLogger("leeward.agent.heartbeat")

MAX_BACKOFF_SECONDS = 60.0


class HeartbeatError(Exception):
    pass


@dataclass(frozen=True)
class Beat:
    fleet_url: str
    token: str
    environment_id: str
    sessions: int
    agent_version: str

    def body(self) -> dict[str, object]:
        return {
            "environmentId": self.environment_id,
            "sessions": self.sessions,
            "agentVersion": self.agent_version,
        }


async def post_json(url: str, token: str, body: dict[str, object], within: float) -> object:
    """POST JSON, return the decoded JSON answer; HeartbeatError on anything but 2xx or no
    answer `within` seconds."""
    try:
        return await request_json("POST", url, token, body, within)
    except FleetError as exc:
        raise HeartbeatError(str(exc)) from None


class Heartbeat:
    """The loop. `beat()` builds each report from the agent's live state (sessions, token)."""

    def __init__(self, beat: Callable[[], Beat], interval: Callable[[], float]) -> None:
        self._beat = beat
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
        beat = self._beat()
        url = beat.fleet_url.rstrip("/") + "/v1/agent/heartbeat"
        within = min(10.0, 2 * self.interval + 1)
        answer = await post_json(url, beat.token, beat.body(), within)
        if isinstance(answer, dict):
            interval = answer.get("intervalSeconds")
            if isinstance(interval, int | float) and 0 < interval <= 3600:
                self._adopted = float(interval)

    async def run(self) -> None:
        while True:
            try:
                await self.beat_once()
                if self._failures:
                    log.info("heartbeat: the fleet answers again after %d failures", self._failures)
                self._failures = 0
                delay = self.interval
            except HeartbeatError as exc:
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
                await asyncio.wait_for(self._wake.wait(), delay)
