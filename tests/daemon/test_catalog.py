"""The create wizard's lifespan choices follow the fleet's policy."""

from __future__ import annotations

from leeward.daemon.service import lifespan_choices
from leeward_protocol.fleet import Catalog, LifespanPolicy


def choices(**policy: int) -> list[tuple[str, str, int | None]]:
    lifespans = LifespanPolicy(
        **{
            "devserver_default_hours": 72,
            "devserver_max_hours": 720,
            "container_hours": 36,
            "container_max_hours": 72,
            **policy,
        }
    )
    catalog = Catalog(zone="z", regions=[], flavors=[], profiles=[], lifespans=lifespans)
    return [(c.kind.value, c.label, c.hours) for c in lifespan_choices(catalog)]


def test_defaults_offer_a_few_expiries_and_permanent():
    assert choices() == [
        ("devserver", "8 hours", 8),
        ("devserver", "24 hours", 24),
        ("devserver", "3 days", 72),
        ("devserver", "7 days", 168),
        ("devserver", "Permanent", None),
        ("container", "36 hours", 36),
        ("container", "12 hours", 12),
        ("container", "8 hours", 8),
    ]


def test_nothing_beyond_the_fleets_maximum():
    got = choices(
        devserver_default_hours=10,
        devserver_max_hours=20,
        container_hours=6,
        container_max_hours=10,
    )
    assert got == [
        ("devserver", "8 hours", 8),
        ("devserver", "10 hours", 10),
        ("devserver", "Permanent", None),
        ("container", "8 hours", 8),
        ("container", "6 hours", 6),
    ]
