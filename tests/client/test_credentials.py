"""The signed-in fleet and token: private on disk, and a sentence saying how to sign in when
they are missing."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leeward.client.credentials import (
    NOT_SIGNED_IN,
    Credentials,
    CredentialsError,
    load_credentials,
    store_credentials,
)
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


def test_credentials_are_private(tmp_path: Path) -> None:
    path = tmp_path / "config" / "leeward" / "credentials.toml"
    old = os.umask(0o022)
    try:
        store_credentials(path, Credentials(fleet="http://127.0.0.1:7420", token="s3cret"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_credentials(path) == Credentials(fleet="http://127.0.0.1:7420", token="s3cret")
    assert [p.name for p in path.parent.iterdir()] == ["credentials.toml"]  # no temp file left


def test_missing_credentials_say_how_to_sign_in(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as info:
        load_credentials(tmp_path / "nope.toml")
    assert str(info.value) == NOT_SIGNED_IN
    broken = tmp_path / "broken.toml"
    broken.write_text("fleet = 'http://x'\n")
    with pytest.raises(CredentialsError, match="leeward login"):
        load_credentials(broken)


# -- errors and rendering --------------------------------------------------------------------
