"""Waking an environment stopped for being idle, for a connection to it (`leeward proxy`, so
`ssh ENV` and VS Code's Remote-SSH alike): the fleet is asked to start it again, the person is
told on the stderr that ssh shows (a start takes seconds, and silence would look like a hang),
and the fleet is polled, with a deadline, until it runs.

Light, as `leeward.client.locate` is: HTTP over asyncio streams (`leeward.client.asking`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from leeward.client.asking import http_json
from leeward.common.clock import Clock, SystemClock

WAKE_SECONDS = 180.0
"""How long a connection waits for a stopped environment to run again."""
POLL_SECONDS = 0.5
API_TIMEOUT = 10.0


class WakeError(Exception):
    """It could not be started, or did not run in time; the message says why and what to do."""


async def wake(
    fleet: str,
    token: str | None,
    name: str,
    say: Callable[[str], None],
    *,
    within: float = WAKE_SECONDS,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Start `name` again and wait until it runs; its resource (JSON) then."""
    clock = clock or SystemClock()
    path = f"/v1/environments/{quote(name, safe='')}"
    status, body = await http_json("POST", fleet, f"{path}/start", token, API_TIMEOUT)
    if status not in (200, 202) or not isinstance(body, dict):
        raise WakeError(f"the fleet would not start {name}: {_said(body, status)}")
    stopped = (body.get("activity") or {}).get("stoppedAt")
    if body.get("state") == "provisioning":
        since = f" (since {stopped[:16].replace('T', ' ')} UTC)" if stopped else ""
        say(
            f"starting {name}, stopped for being idle{since}; its home is as you left it. "
            f"Waiting up to {within:g} s"
        )
    deadline = clock.monotonic() + within
    while body.get("state") == "provisioning":
        if clock.monotonic() > deadline:
            raise WakeError(
                f"{name} is still starting after {within:g} s; `leeward show {name}` says "
                "what it is doing; connect again when it runs"
            )
        await clock.sleep(POLL_SECONDS)
        status, answer = await http_json("GET", fleet, path, token, API_TIMEOUT)
        if status == 200 and isinstance(answer, dict):
            body = answer
    if body.get("state") not in ("running", "migrating"):
        why = body.get("statusMessage") or "no reason given"
        raise WakeError(f"{name} did not start: it is {body.get('state')} ({why})")
    return body


def _said(body: Any, status: int) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", f"HTTP {status}"))
    return f"HTTP {status}"
