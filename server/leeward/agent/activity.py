"""What an agent tells the fleet keeps its environment alive (idle stop, leeward.fleet.activity),
besides its open sessions: when a session last had input, and whether a session is VS Code's."""

from __future__ import annotations

import time

EDITOR_MARKS = (".vscode-server", "vscode-server", "code-server")
"""In a session's command: VS Code's server (Remote-SSH starts it from `~/.vscode-server`)."""


def runs_editor_server(command: str | None) -> bool:
    """Whether a session's command is VS Code's: its connection is then an editor's."""
    return bool(command) and any(mark in (command or "") for mark in EDITOR_MARKS)


class LastInput:
    """When a session last received input from its client (keystrokes, a command's stdin):
    someone at work, even once the session is closed. On the monotonic clock."""

    def __init__(self) -> None:
        self._at: float | None = None

    def note(self) -> None:
        self._at = time.monotonic()

    @property
    def idle_seconds(self) -> float | None:
        """Seconds since the last input; None: none since the agent started."""
        return None if self._at is None else max(time.monotonic() - self._at, 0.0)
