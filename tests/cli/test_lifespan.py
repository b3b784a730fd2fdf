"""`--lifespan` as people write it: 8h, 3d, permanent; and a hint for what it is not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from leeward.cli.errors import CliError
from leeward.cli.lifespan import parse_lifespan
from leeward.client.paths import Paths
from leeward_protocol.fleet import Environment, Lifespan

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def paths_in(root: Path) -> Paths:
    return Paths(
        config_dir=root / "config",
        data_dir=root / "data",
        state_dir=root / "state",
        ssh_dir=root / "home dir" / ".ssh" / "leeward",
    )


def environment(name: str, state: str = "running", **extra: object) -> Environment:
    wire: dict[str, object] = {
        "id": f"e-{name}",
        "name": name,
        "fqdn": f"{name}.us-east.leeward.test",
        "kind": "devserver",
        "flavor": "small",
        "hardware": {"cpus": 2, "memoryGib": 8},
        "region": "us-east",
        "address": "127.101.0.7",
        "sshPort": 2222,
        "state": state,
        "lifespan": "temporary",
        "createdAt": NOW.isoformat(),
        "updatedAt": NOW.isoformat(),
    }
    wire.update(extra)
    return Environment.model_validate(wire)


# -- lifespan --------------------------------------------------------------------------------


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


# -- ssh config ------------------------------------------------------------------------------
