"""Retries of calls to the fleet, with backoff on an injected clock (tests move time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from leeward.client.api import FleetUnreachable
from leeward.common.backoff import Backoff
from leeward.common.clock import Clock
from leeward.common.errors import FleetError

T = TypeVar("T")

RETRIED_STATUSES = frozenset({502, 503, 504})
"""Answers that mean "not now" (a proxy or a restarting replica), worth trying again."""


def fleet_backoff() -> Backoff:
    """Between tries to reach the fleet: a quarter second, doubling up to 10 s, with equal
    jitter (many daemons come back after a fleet outage)."""
    return Backoff(base=0.25, cap=10.0)


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, FleetUnreachable) or (
        isinstance(exc, FleetError) and exc.status in RETRIED_STATUSES
    )


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    clock: Clock,
    attempts: int,
    backoff: Backoff | None = None,
) -> T:
    """`call()`, tried up to `attempts` times while it fails in a way worth retrying."""
    backoff = backoff or fleet_backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except FleetError as exc:
            if attempt == attempts or not retryable(exc):
                raise
        await clock.sleep(backoff.next())
    raise AssertionError("unreachable")  # pragma: no cover
