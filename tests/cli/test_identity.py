"""`leeward version`, and the credentials that `leeward login` stores. (Login itself, by token
argument and on stdin, runs in test_end_to_end.py; its refusals in test_errors.py.)"""

from __future__ import annotations

import stat

from leeward.client.credentials import Credentials, store_credentials

from .sandbox import Sandbox


def test_version(sandbox: Sandbox) -> None:
    result = sandbox.run("version", check=True)
    assert result.stdout.startswith("leeward ")


def test_credentials_written_by_the_cli_are_private(sandbox: Sandbox) -> None:
    store_credentials(sandbox.paths.credentials, Credentials(fleet="http://x:1", token="t"))
    mode = stat.S_IMODE(sandbox.paths.credentials.stat().st_mode)
    assert mode == 0o600
