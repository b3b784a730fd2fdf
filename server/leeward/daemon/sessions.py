"""The SSH sessions that `leeward proxy` carries on this machine, as the daemon sees them.

Each proxy keeps a small JSON file in `state_dir/sessions/` (`PID.json`, replaced atomically,
removed on exit): the environment, its state (connecting, connected, resuming, failed), the
round trip, where the address came from (api, dns, cache), whether DNS answered, and how many
times it resumed and how long the last blackout was. The daemon watches the directory
(watchdog) and folds the sessions into its health records, so the status bar can say
"reconnecting" during a resume (and for a moment after one too short to see) and "DNS bypass"
while DNS is down. A file whose process is gone is ignored (a proxy killed with SIGKILL cannot
remove it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leeward.common.processes import pid_alive
from leeward.daemon.watch import DirectoryWatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxySession:
    env: str
    pid: int
    state: str
    source: str | None = None
    rtt_ms: float | None = None
    reason: str = ""
    dns_down: bool = False
    resumes: int = 0
    """How many times the session resumed (blackouts the relay rode through)."""
    blackout_ms: float | None = None
    """How long the last one was dark, from the link's loss to its resume."""
    resumed_after: str = ""

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ProxySession | None:
        env, pid, state = raw.get("env"), raw.get("pid"), raw.get("state")
        if not isinstance(env, str) or not isinstance(pid, int) or not isinstance(state, str):
            return None
        rtt = raw.get("rtt")
        return cls(
            env=env,
            pid=pid,
            state=state,
            source=raw.get("source") if isinstance(raw.get("source"), str) else None,
            rtt_ms=round(rtt * 1000, 1) if isinstance(rtt, int | float) else None,
            reason=str(raw.get("reason") or ""),
            dns_down=raw.get("dns") == "down",
            resumes=resumes if isinstance(resumes := raw.get("resumes"), int) else 0,
            blackout_ms=dark if isinstance(dark := raw.get("blackout_ms"), int | float) else None,
            resumed_after=str(raw.get("resumed_after") or ""),
        )


def read_sessions(directory: Path) -> list[ProxySession]:
    """Every live proxy's session (files of dead processes are skipped)."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced or removed while we read: the next change reads it again
        session = ProxySession.parse(raw) if isinstance(raw, dict) else None
        if session is not None and pid_alive(session.pid):
            found.append(session)
    return found


class SessionWatcher:
    """Calls `on_change(sessions)` on the event loop whenever the directory changes."""

    def __init__(self, directory: Path, on_change: Callable[[list[ProxySession]], None]) -> None:
        self.directory = directory
        self.on_change = on_change
        # A resume rewrites the file a few times in a row: read once they settle.
        self._watch = DirectoryWatch(
            directory, lambda path: path.endswith(".json"), self.refresh, settle=0.02
        )

    def start(self) -> None:
        self._watch.start()

    def refresh(self) -> None:
        try:
            self.on_change(read_sessions(self.directory))
        except Exception:
            log.exception("reading the proxy sessions failed")

    def stop(self) -> None:
        self._watch.stop()
