"""`--lifespan 8h | 3d | permanent` for devservers."""

from __future__ import annotations

import re

from leeward.cli.errors import CliError
from leeward_protocol.fleet import Lifespan

_DURATION = re.compile(r"^\s*(\d+)\s*([hd]?)\s*$", re.IGNORECASE)


def parse_lifespan(text: str) -> tuple[Lifespan, int | None]:
    """`8h` → (temporary, 8); `3d` → (temporary, 72); `permanent` → (permanent, None).
    A bare number is hours."""
    if text.strip().lower() == "permanent":
        return Lifespan.PERMANENT, None
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise CliError(
            f"Lifespan {text!r} is not understood: use hours (8h), days (3d) or `permanent`."
        )
    hours = int(match.group(1)) * (24 if match.group(2).lower() == "d" else 1)
    return Lifespan.TEMPORARY, hours
