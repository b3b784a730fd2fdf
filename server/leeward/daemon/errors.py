"""The daemon's one error: a request failed, and its message says what to do."""

from __future__ import annotations


class DaemonError(Exception):
    """`str(error)` is one sentence for the user; `data` goes to the client as is."""

    def __init__(self, message: str, *, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}
