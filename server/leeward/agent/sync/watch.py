"""File events on the tracked paths (watchdog), for the profile sync's uploads: a burst of events
starts an upload once it settles, so an edit reaches the fleet within a couple of seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leeward.agent.sync.home import under
from leeward.common.files import TMP_MARK
from leeward.common.profilefiles import CONFLICT_MARK, OWN_STATE

log = logging.getLogger("leeward.agent.sync")


class TrackedWatch:
    """watchdog on the tracked paths: each tracked directory recursively, and for the rest the
    closest directory that exists (so that a tracked file or directory created later is seen).
    `touched` is called from watchdog's thread; `refresh()` follows directories that appeared.
    """

    def __init__(self, home: Path, tracked: Callable[[], list[str]], touched: Callable[[], None]):
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.home = home
        self._tracked = tracked
        self._touched = touched
        self._loop = asyncio.get_running_loop()
        self._watches: dict[tuple[str, bool], Any] = {}
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
                if any(watch.matters(p) for p in paths if p):
                    loop = watch._loop
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(watch._touched)

        self._handler = Handler()
        self._observer: Any = Observer()
        self._observer.daemon = True
        self._observer.start()
        self.refresh()

    def matters(self, full: str) -> bool:
        try:
            rel = Path(full).relative_to(self.home).as_posix()
        except ValueError:
            return False
        name = rel.rsplit("/", 1)[-1]
        if CONFLICT_MARK in name or TMP_MARK in name or under(rel, [OWN_STATE]):
            return False
        tracked = self._tracked()
        # The path itself, or a directory on the way to a tracked path (created or moved).
        return under(rel, tracked) or any(t.startswith(rel + "/") for t in tracked)

    def refresh(self) -> None:
        wanted: set[tuple[str, bool]] = set()
        for top in self._tracked():
            full = self.home / top
            if full.is_dir() and not full.is_symlink():
                wanted.add((str(full), True))
                continue
            directory = full.parent
            while directory != self.home and not directory.is_dir():
                directory = directory.parent
            if directory.is_relative_to(self.home):
                wanted.add((str(directory), False))
        for key in set(self._watches) - wanted:
            with contextlib.suppress(Exception):
                self._observer.unschedule(self._watches.pop(key))
        for key in wanted - set(self._watches):
            try:
                self._watches[key] = self._observer.schedule(
                    self._handler, key[0], recursive=key[1]
                )
            except OSError as exc:  # gone meanwhile, or out of inotify watches
                log.warning("profile sync: cannot watch %s: %s", key[0], exc)

    def stop(self) -> None:
        self._observer.stop()
        with contextlib.suppress(RuntimeError):
            self._observer.join(timeout=2)
