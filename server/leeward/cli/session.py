"""The signed-in user as the CLI sees it: credentials, and sign-in errors as CLI errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from leeward.cli.errors import CliError
from leeward.client import access
from leeward.client.access import refresh_certificate, refresh_ssh
from leeward.client.credentials import Credentials, CredentialsError, load_credentials
from leeward.client.paths import Paths
from leeward_protocol.fleet import WhoAmI

if TYPE_CHECKING:
    from leeward.client.api import FleetClient

__all__ = ["client", "credentials", "refresh_certificate", "refresh_ssh", "sign_in"]


def credentials(paths: Paths) -> Credentials:
    try:
        return load_credentials(paths.credentials)
    except CredentialsError as exc:
        raise CliError(str(exc)) from None


def client(paths: Paths) -> FleetClient:
    from leeward.client.api import FleetClient

    creds = credentials(paths)
    return FleetClient(creds.fleet, creds.token)


async def sign_in(paths: Paths, url: str, token: str) -> WhoAmI:
    try:
        return await access.sign_in(paths, url, token)
    except access.AccessError as exc:
        raise CliError(str(exc)) from None
