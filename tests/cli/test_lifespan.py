"""`--lifespan` as people write it: 8h, 3d, permanent; and a hint for what it is not."""

from __future__ import annotations

import pytest

from leeward.cli.errors import CliError
from leeward.cli.lifespan import parse_lifespan
from leeward_protocol.fleet import Lifespan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", (Lifespan.TEMPORARY, 8)),
        ("3d", (Lifespan.TEMPORARY, 72)),
        ("12", (Lifespan.TEMPORARY, 12)),
        (" 2D ", (Lifespan.TEMPORARY, 48)),
        ("permanent", (Lifespan.PERMANENT, None)),
        ("Permanent", (Lifespan.PERMANENT, None)),
    ],
)
def test_lifespan_parses(text: str, expected: tuple[Lifespan, int | None]) -> None:
    assert parse_lifespan(text) == expected


@pytest.mark.parametrize("text", ["", "0h", "-3d", "8w", "forever", "1.5h", "h"])
def test_lifespan_refuses_with_a_hint(text: str) -> None:
    with pytest.raises(CliError, match=r"use hours \(8h\), days \(3d\) or `permanent`"):
        parse_lifespan(text)
