"""The signed-in user as the CLI sees it: credentials, and sign-in errors as CLI errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from leeward import access
from leeward.access import refresh_certificate, refresh_ssh
from leeward.cli.errors import CliError
from leeward.credentials import Credentials, CredentialsError, load_credentials
from leeward.paths import Paths
from leeward_protocol.fleet import WhoAmI

if TYPE_CHECKING:
    from leeward.client import FleetClient

__all__ = ["client", "credentials", "refresh_certificate", "refresh_ssh", "sign_in"]


def credentials(paths: Paths) -> Credentials:
    try:
        return load_credentials(paths.credentials)
    except CredentialsError as exc:
        raise CliError(str(exc)) from None


def client(paths: Paths) -> FleetClient:
    from leeward.client import FleetClient

    creds = credentials(paths)
    return FleetClient(creds.fleet, creds.token)


async def sign_in(paths: Paths, url: str, token: str) -> WhoAmI:
    try:
        return await access.sign_in(paths, url, token)
    except access.AccessError as exc:
        raise CliError(str(exc)) from None
