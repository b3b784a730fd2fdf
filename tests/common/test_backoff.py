"""The one backoff: exponential, capped, jittered within its bounds, reset by a success."""

from __future__ import annotations

import random

from leeward.common.backoff import NO_JITTER, SPREAD, Backoff, worth_telling


def test_backoff_grows_with_jitter_within_bounds():
    backoff = Backoff(base=0.25, cap=4.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [min(4.0, 0.25 * 2**n) for n in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays), "jittered"
    backoff.reset()
    assert backoff.next() <= 0.25


def test_backoff_bounds_every_jitter_and_never_overflows():
    spread = Backoff(base=2.0, cap=60.0, jitter=SPREAD, rng=random.Random(3))
    delays = [spread.next() for _ in range(10)]
    assert all(
        0.8 * min(60.0, 2.0 * 2**n) <= d <= 1.2 * min(60.0, 2.0 * 2**n)
        for n, d in enumerate(delays)
    )
    steady = Backoff(base=0.5, cap=30.0, jitter=NO_JITTER)
    assert [steady.next() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert steady.delay(10_000) == 30.0  # a long outage: no float overflow


def test_a_long_outage_is_told_without_a_flood():
    told = [n for n in range(1, 101) if worth_telling(n)]
    assert told == [1, 2, 3, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
