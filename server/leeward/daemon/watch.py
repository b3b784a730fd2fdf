"""Watching a directory from the event loop: watchdog's observer thread reports changes to
matching files, and `changed` runs on the loop once a burst of them has settled (an editor or
a proxy rewrites a file in several steps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DirectoryWatch:
    def __init__(
        self,
        directory: Path,
        matches: Callable[[str], bool],
        changed: Callable[[], None],
        *,
        settle: float,
    ) -> None:
        self.directory = directory
        self.matches = matches
        self.changed = changed
        self.settle = settle
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Handle | None = None

    def start(self) -> None:
        """Watch from now on (creating the directory if needed), then run `changed` once."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self._loop = asyncio.get_running_loop()
        self.directory.mkdir(parents=True, exist_ok=True)
        watch = self

        class Changed(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                touched = (str(event.src_path), str(getattr(event, "dest_path", "")))
                loop = watch._loop
                if any(map(watch.matches, touched)) and loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(watch._soon)

        self._observer = Observer()
        self._observer.schedule(Changed(), str(self.directory), recursive=False)
        self._observer.daemon = True
        self._observer.start()
        self.run()

    def _soon(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(self.settle, self.run)

    def run(self) -> None:
        self._pending = None
        self.changed()

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(timeout=2)
            self._observer = None
