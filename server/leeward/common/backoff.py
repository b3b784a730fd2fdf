"""Exponential backoff with jitter: the one way every part of Leeward waits before trying again
(the daemon's calls to the fleet, the agent's heartbeats, reports and profile sync, the proxy's
reconnects).

The n-th delay is `min(cap, base * 2**n)`, times a factor drawn from `jitter`: the jitter
spreads the retries of many clients after an outage (a fleet restart, a region's links back),
and its lower bound keeps a retry from coming at once. Sleeping is the caller's, on its
injected clock, so tests move time instead of waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

EQUAL_JITTER = (0.5, 1.0)
"""Uniform in [d/2, d]: spread, and never sooner than half the delay."""

SPREAD = (0.8, 1.2)
"""Within a fifth either side: for periodic work (heartbeats) whose rhythm should hold."""

NO_JITTER = (1.0, 1.0)


@dataclass
class Backoff:
    base: float
    """The first delay (before jitter)."""
    cap: float
    """No delay is longer than this (before jitter)."""
    jitter: tuple[float, float] = EQUAL_JITTER
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    """How many delays were taken since the last success."""

    def next(self) -> float:
        """The delay before the next try; each call doubles the one after."""
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay

    def delay(self, attempt: int) -> float:
        """The delay after `attempt` failures but one (0: the first), jittered."""
        # The exponent is bounded so that a long outage cannot overflow a float.
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 64))
        low, high = self.jitter
        return ceiling * (low if low == high else self.rng.uniform(low, high))

    def reset(self) -> None:
        """After a success: the next failure waits `base` again."""
        self.attempt = 0


def worth_telling(failures: int) -> bool:
    """Whether the `failures`-th failure in a row is worth a log line: the first three, then
    one in ten, so that a long outage is told without a flood."""
    return failures <= 3 or failures % 10 == 0
