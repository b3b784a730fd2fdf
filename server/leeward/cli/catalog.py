"""`leeward catalog` and `leeward features list`: what the fleet offers (regions, devserver
flavors, container profiles, and the features config.toml can name)."""

from __future__ import annotations

from leeward.cli import console, session
from leeward.cli.options import JsonOption


def catalog(json_: JsonOption = False) -> None:
    """Regions, devserver flavors and container profiles on offer."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.catalog())
    if json_:
        console.print_json(result)
    else:
        render.catalog(console.out(), result)


def features_list(json_: JsonOption = False) -> None:
    """The features you can name in ~/.config/leeward/config.toml (`features = [...]`)."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.features())
    if json_:
        console.print_json(result)
    else:
        render.features(console.out(), result.features)
