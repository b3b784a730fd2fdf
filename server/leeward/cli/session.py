"""The signed-in user as the CLI sees it: this machine's paths, the stored credentials, a fleet
client with them, and sign-in errors as CLI errors.

Every command module imports this at start-up, so what it uses is imported where it is used:
otherwise `leeward --help` would load pydantic, the protocol and aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from leeward.cli.errors import CliError

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward.client.credentials import Credentials
    from leeward.client.paths import Paths
    from leeward_protocol.fleet import WhoAmI

T = TypeVar("T")


def default_paths() -> Paths:
    from leeward.client.paths import Paths

    return Paths.default()


def credentials(paths: Paths) -> Credentials:
    from leeward.client.credentials import CredentialsError, load_credentials

    try:
        return load_credentials(paths.credentials)
    except CredentialsError as exc:
        raise CliError(str(exc)) from None


def client(paths: Paths) -> FleetClient:
    from leeward.client.api import FleetClient

    creds = credentials(paths)
    return FleetClient(creds.fleet, creds.token)


MACHINE_READABLE = False
"""Set by `--json` (leeward.cli.options): no banner then, only what the fleet sent."""


def with_fleet(work: Callable[[FleetClient], Awaitable[T]], *, banner: bool = True) -> T:
    """Run `work` with the signed-in user's fleet client, to the end, and return its result.

    `banner`: first, the one-line banner of a warning or critical announcement that concerns
    the user (leeward.cli.banner: one short request beside `work`, never holding it
    up for long); never with `--json`."""

    async def go() -> T:
        async with client(default_paths()) as fleet:
            if not banner or MACHINE_READABLE:
                return await work(fleet)
            from leeward.cli.banner import with_first_line

            return await with_first_line(fleet, work(fleet))

    return asyncio.run(go())


async def sign_in(paths: Paths, url: str, token: str) -> WhoAmI:
    from leeward.client import access

    try:
        return await access.sign_in(paths, url, token)
    except access.AccessError as exc:
        raise CliError(str(exc)) from None
