"""The local fabric for the host tests: address ranges of their own, in 198.18.0.0/15 (never
routed on the internet) and apart from any `leeward up` fabric's, and a fabric per test, torn
down after it even when it fails."""

from __future__ import annotations

import json
import random
import secrets
import subprocess
from collections.abc import AsyncIterator
from ipaddress import IPv4Network

import pytest

from leeward.providers.fabric import Fabric

REGIONS = IPv4Network("198.18.0.0/16")
TRANSITS = IPv4Network("198.19.128.0/17")  # away from the local fleet's own 198.19.0.0/20


def routed_networks() -> list[IPv4Network]:
    shown = subprocess.run(
        ["ip", "-json", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    )
    found = []
    for route in json.loads(shown.stdout):
        dst = route.get("dst", "")
        if dst and dst != "default" and ":" not in dst:
            found.append(IPv4Network(dst, strict=False))
    return found


def free_network(pool: IPv4Network, taken: list[IPv4Network] | None = None) -> IPv4Network:
    """A random /24 of `pool` that no route of this machine (nor `taken`) overlaps."""
    used = routed_networks() + (taken or [])
    candidates = list(pool.subnets(new_prefix=24))
    random.shuffle(candidates)
    return next(n for n in candidates if not any(n.overlaps(u) for u in used))


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    made = Fabric(f"lt{secrets.token_hex(2)[:3]}", transit=free_network(TRANSITS))
    try:
        await made.start()
        yield made
    finally:
        await made.teardown()
