"""Backoff with jitter for calls to the fleet, on an injected clock (tests move time)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from leeward.client.api import FleetError, FleetUnreachable
from leeward.common.clock import Clock

T = TypeVar("T")

RETRIED_STATUSES = frozenset({502, 503, 504})
"""Answers that mean "not now" (a proxy or a restarting replica), worth trying again."""


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": the n-th delay is uniform in [d/2, d] where
    d = min(cap, base * 2**n). The jitter spreads the retries of many daemons after a fleet
    outage; the fixed half keeps a retry from coming at once."""

    base: float = 0.25
    cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0


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
    backoff = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except FleetError as exc:
            if attempt == attempts or not retryable(exc):
                raise
        await clock.sleep(backoff.next())
    raise AssertionError("unreachable")  # pragma: no cover
