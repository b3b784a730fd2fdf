"""The announcements a command shows besides its own result: the one-line banner a command that
talks to the fleet prints first when a warning or critical announcement concerns its user, and
the lines under `leeward list` and `show`. Asked for beside the command's own request, and never
waited for long after it: a fleet that does not answer in time gives no banner, never an
error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.notify import Announcement

T = TypeVar("T")

BANNER_SECONDS = 1.0
"""How long a command waits for the announcements after its own work is done, at most: they
are asked for when the work starts, beside it, so a fleet that answers the one answers both."""


async def _concerning(fleet: FleetClient, asked: asyncio.Future[Any]) -> list[Announcement]:
    """The announcements that concern the user now; none if the fleet does not say in time."""
    from leeward.common.errors import FleetError

    try:
        async with asyncio.timeout(BANNER_SECONDS):
            answer = await asked
    except (FleetError, TimeoutError):
        return []
    return list(answer.announcements)


def print_first_line(found: list[Announcement]) -> None:
    """The banner, on stderr (stdout stays the command's result)."""
    from leeward.cli import console, render_announcements

    said = render_announcements.first_line(found)
    if said is not None:
        console.err().print(said)


async def with_first_line(fleet: FleetClient, work: Awaitable[T]) -> T:
    """`work`'s result, the banner printed first."""
    result, found = await beside(lambda _: work)(fleet)
    print_first_line(found)
    return result


def beside(
    work: Callable[[FleetClient], Awaitable[T]],
) -> Callable[[FleetClient], Awaitable[tuple[T, list[Announcement]]]]:
    """`work`, and the announcements that concern the user, asked for at the same time
    (`leeward list` and `show` print them; their first line rides on the same answer)."""

    async def go(fleet: FleetClient) -> tuple[T, list[Announcement]]:
        asked = asyncio.ensure_future(fleet.announcements())
        try:
            result = await work(fleet)
        except BaseException:
            asked.cancel()
            raise
        return result, await _concerning(fleet, asked)

    return go
