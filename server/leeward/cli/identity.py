"""`leeward version`, `login` and `whoami`: which client this is, and who the fleet takes you
for."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import JsonOption

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.fleet import WhoAmI


def version() -> None:
    """Print the version of this client."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        print(f"leeward {installed('leeward')}")
    except PackageNotFoundError:
        print("leeward (not installed: run `pip install -e .`)")


def login(
    fleet: Annotated[
        str | None, typer.Option("--fleet", help="The fleet's URL, e.g. http://127.0.0.1:7420.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Your token; read from stdin when absent.")
    ] = None,
) -> None:
    """Sign in to a fleet: check the token, store it, and get an SSH certificate."""
    from leeward.client.credentials import CredentialsError, load_credentials

    paths = session.default_paths()
    url = fleet
    if url is None:
        try:
            url = load_credentials(paths.credentials).fleet
        except CredentialsError:
            url = "http://127.0.0.1:7420"
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if token is None:
        if sys.stdin.isatty():
            import getpass

            token = getpass.getpass(f"Token for {url}: ")
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("No token given: pass `--token T` or pipe it on stdin.")
    who = asyncio.run(session.sign_in(paths, url, token))
    console.out().print(f"Signed in to {url} as [bold]{who.user}[/] ({who.role.value}).")


def whoami(json_: JsonOption = False) -> None:
    """Who the fleet thinks you are."""

    async def ask(fleet: FleetClient) -> tuple[WhoAmI, str]:
        return await fleet.whoami(), fleet.url

    who, url = session.with_fleet(ask)
    if json_:
        console.print_json(who)
    else:
        console.out().print(f"{who.user} ({who.role.value}) at {url}")
