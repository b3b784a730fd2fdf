"""`leeward up` and `leeward down`. (The whole way from `up` to `down`, restarts included, is
test_end_to_end.py.)"""

from __future__ import annotations

from .sandbox import Sandbox


def test_down_when_nothing_runs(sandbox: Sandbox) -> None:
    result = sandbox.run("down")
    assert result.returncode == 0
    assert "not running" in result.stdout
