"""The bell of a replica's commits: rung after every write transaction this process commits
(`Store.committed`), so that long polls (the editor's inbox) wake at once instead of at their
next poll."""

from __future__ import annotations

import asyncio
import contextlib


class Bell:
    """Rung after every commit of this replica; waiting polls wake and look again. A poll takes
    the bell's current event before it reads (`armed`), so that a commit landing between its
    read and its wait still wakes it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.waiting = 0
        """How many waits are parked on it now."""

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def armed(self) -> asyncio.Event:
        return self._event

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(seconds, 0.0)):
                    await event.wait()
        finally:
            self.waiting -= 1
