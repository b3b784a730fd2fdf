"""How the CLI words things: one-sentence errors, relative times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from leeward.cli.errors import format_error, one_sentence
from leeward.cli.render import when
from leeward.client.paths import Paths
from leeward_protocol.fleet import Environment

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


def test_errors_are_one_sentence() -> None:
    assert one_sentence("Cannot reach\n  the fleet") == "Cannot reach the fleet."
    assert one_sentence("Run `leeward up`") == "Run `leeward up`"
    assert format_error("Not signed in: run `leeward login`.") == (
        "Error: Not signed in: run `leeward login`."
    )


def test_when_is_relative() -> None:
    assert when(None) == "never"
    assert when(NOW + timedelta(days=2, hours=3, minutes=5), now=NOW) == "in 2d 3h"
    assert when(NOW + timedelta(minutes=45), now=NOW) == "in 45m"
    assert when(NOW - timedelta(hours=1), now=NOW) == "1h ago"
    assert when(NOW + timedelta(seconds=20), now=NOW) == "in <1m"
