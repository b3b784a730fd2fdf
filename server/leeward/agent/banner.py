"""The SSH login banner: the fleet's announcements that concern this environment, printed
before an interactive login's shell starts, as sshd prints the motd.

Only for a login shell in a PTY: `ssh ENV cmd`, scp, sftp and rsync stay byte-clean. Off when
the home has `~/.hushlogin`, or the owner's config.toml says `[announcements] ssh_banner =
false`. A login never waits long on the fleet: one short request (`DEADLINE`); when the fleet
does not answer, the last answer if it is recent (`STALE_SECONDS`), otherwise nothing, and the
shell starts either way.

An announcement is an operator's text: it reaches a terminal as plain text, every control
character removed (leeward.common.terminal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from leeward.common.errors import FleetError
from leeward.common.terminal import plain

if TYPE_CHECKING:
    from leeward.agent.fleet import AgentFleet
    from leeward_protocol.notify import Announcement

log = logging.getLogger("leeward.agent.banner")

DEADLINE = 1.0
"""The longest a login waits for the fleet's answer."""
STALE_SECONDS = 300.0
"""How old the last answer may be to stand in for one the fleet did not give."""
MAX_LINES = 12
"""Lines of one announcement's text printed; the rest is in `leeward announcements`."""


class Banner:
    """One environment's login banner. `enabled` is read at each login (the owner's config
    may change); `home` is where the agent sees the home (for `~/.hushlogin`)."""

    def __init__(
        self,
        fleet: AgentFleet,
        home: Callable[[], Path],
        enabled: Callable[[], bool] = lambda: True,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._home = home
        self._enabled = enabled
        self._monotonic = monotonic
        self._last: tuple[float, list[Announcement]] | None = None

    async def __call__(self) -> bytes:
        """What to print before the shell (empty: nothing)."""
        if not self._enabled():
            return b""
        try:
            if (self._home() / ".hushlogin").exists():
                return b""
        except OSError:
            pass
        found = await self._announcements()
        return render(found).encode()

    async def _announcements(self) -> list[Announcement]:
        try:
            async with asyncio.timeout(DEADLINE):
                found = await self._fleet.announcements(within=DEADLINE)
        except (FleetError, TimeoutError) as exc:
            log.info("login banner: %s", getattr(exc, "message", None) or "no answer in time")
            if self._last is not None and self._monotonic() - self._last[0] < STALE_SECONDS:
                return self._last[1]
            return []
        self._last = (self._monotonic(), found)
        return found


def render(announcements: list[Announcement]) -> str:
    """Each announcement as a few terminal lines (`\\r\\n`: the client's terminal is raw)."""
    lines: list[str] = []
    for a in announcements:
        text = plain(a.text).splitlines() or [""]
        head = f"[leeward {a.severity.value}] "
        shown = text[:MAX_LINES]
        lines.append(head + shown[0])
        lines.extend("  " + line for line in shown[1:])
        if len(text) > MAX_LINES:
            lines.append("  … (the rest: `leeward announcements`)")
        for action in a.actions:
            how = action.command or action.url or ""
            lines.append(f"  → {plain(action.label)}" + (f": {plain(how)}" if how else ""))
    if not lines:
        return ""
    return "\r\n".join(lines) + "\r\n\r\n"
