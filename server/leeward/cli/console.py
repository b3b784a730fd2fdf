"""Where a command writes: its result on stdout, progress and questions on stderr, `--json` as
the fleet sent it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def out() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)  # paths stay whole for copy and paste


def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    """`--json`: the fleet's camelCase JSON, exactly as it sent it."""
    from leeward.client.api import wire_json

    print(wire_json(value))
