"""The signed-in fleet and token: private on disk, and a sentence saying how to sign in when
they are missing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from leeward.client.credentials import (
    NOT_SIGNED_IN,
    Credentials,
    CredentialsError,
    load_credentials,
    store_credentials,
)


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
