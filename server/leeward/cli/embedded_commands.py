"""`leeward up` and `leeward down`: start the embedded fleet of cli/embedded.py and sign in to it
as its admin (with a token it issues from its own database, and its DNS remembered for the
address race); stop it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError

if TYPE_CHECKING:
    from leeward.cli.embedded import EmbeddedFleet
    from leeward.client.paths import Paths


def up(
    port: Annotated[
        int | None, typer.Option("--port", help="The API's port (kept in the fleet's config).")
    ] = None,
) -> None:
    """Start the embedded fleet on this machine and sign in to it as an admin."""
    import getpass

    from leeward.cli.embedded import EmbeddedFleet, healthy, port_in_use, port_taken

    paths = session.default_paths()
    out = console.out()
    embedded = EmbeddedFleet.of(paths)
    running = embedded.pid()
    if running is not None and port is not None and not embedded.url().endswith(f":{port}"):
        raise CliError(
            f"The embedded fleet already runs at {embedded.url()}: run `leeward down` first "
            f"to move it to port {port}."
        )
    if running is None:
        embedded.ensure_config(port)
    url = embedded.url()
    if running is not None and healthy(url) and (user := _signed_in_as(paths, url)):
        out.print(f"The embedded fleet is already running at {url}; you are signed in as {user}.")
        _start_hosts(embedded, url)
        return
    if running is None:
        if port_in_use(url):
            raise port_taken(url)
        with console.err().status(f"Starting the embedded fleet at {url}…"):
            dns = embedded.ensure_dns_port()
            pid = embedded.start()
            embedded.wait_healthy(url, pid)
        out.print(f"Started the embedded fleet at {url} (log: {embedded.log_path}).")
        if dns is not None:
            out.print(f"Its DNS serves the zone at {dns} (UDP and TCP).")
    else:
        embedded.wait_healthy(url, running)
    if user := _signed_in_as(paths, url):  # restarted: the stored token is still good
        out.print(f"Signed in as [bold]{user}[/], as before.")
    else:
        token = asyncio.run(_issue_admin_token(embedded.config_path, getpass.getuser()))
        who = asyncio.run(session.sign_in(paths, url, token))
        out.print(f"Signed in as [bold]{who.user}[/] ({who.role.value}).")
    _start_hosts(embedded, url)
    _remember_embedded_dns(paths, embedded, url)
    out.print("Next: `leeward create devserver --name mybox`, then `leeward ssh mybox`.")


def _start_hosts(embedded: EmbeddedFleet, url: str) -> None:
    """Start the host agents that do not run, and wait until the fleet hears every one."""
    hosts = embedded.hosts
    if not hosts.names():
        return
    with console.err().status("Starting the host agents…"):
        started = hosts.start(url)
        hosts.wait_reachable()
    if started:
        console.out().print(
            f"Started {len(started)} host agent(s): {', '.join(started)} "
            f"(logs: {hosts.directory}/NAME/host.log)."
        )


def _remember_embedded_dns(paths: Paths, embedded: EmbeddedFleet, url: str) -> None:
    """Tell this machine's clients where the embedded fleet serves its zone (they also learn it
    from the catalog): `leeward proxy` and `leeward locate` race it with the API and the cache."""
    from leeward.client.locate import AddressCache
    from leeward.fleet.config import ConfigError, load_config

    try:
        config = load_config(embedded.config_path)
    except ConfigError:
        return
    if config.dns.enabled:
        dns = f"{config.dns.listen_host}:{config.dns.port}"
        AddressCache.of(paths, url).remember_fleet(config.zone, dns)


async def _issue_admin_token(config_path: Path, user: str) -> str:
    from leeward.fleet.config import ConfigError, load_config
    from leeward_protocol.fleet import Role

    try:
        from leeward.fleet.bootstrap import issue_token
    except ImportError as exc:
        raise CliError(
            f"This installation has no fleet backend ({exc}): reinstall leeward."
        ) from None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        token: str = await issue_token(config, user, Role.ADMIN, description="leeward up")
    except ValueError as exc:
        raise CliError(f"Cannot make {user!r} the fleet's user: {exc}.") from None
    return token


def _signed_in_as(paths: Paths, url: str) -> str | None:
    """The user whose stored token works at `url`, with a key and certificate; else None."""
    from leeward.client.api import FleetClient
    from leeward.client.credentials import CredentialsError, load_credentials
    from leeward.common.errors import FleetError

    try:
        creds = load_credentials(paths.credentials)
    except CredentialsError:
        return None
    if creds.fleet.rstrip("/") != url.rstrip("/"):
        return None

    async def check() -> str | None:
        async with FleetClient(creds.fleet, creds.token, timeout=5) as fleet:
            try:
                who = await fleet.whoami()
            except FleetError:
                return None
        return who.user if paths.identity.exists() and paths.certificate.exists() else None

    return asyncio.run(check())


def down() -> None:
    """Stop the embedded fleet (and, with it, its environments' agents)."""
    from leeward.cli.embedded import EmbeddedFleet

    embedded = EmbeddedFleet.of(session.default_paths())
    with console.err().status("Stopping the host agents…"):
        killed = embedded.hosts.stop()
    if killed:
        console.out().print(
            f"Host agent(s) {', '.join(killed)} did not stop within the deadline; killed them."
        )
    if embedded.pid() is None:
        embedded.pid_path.unlink(missing_ok=True)
        console.out().print("The embedded fleet is not running.")
        return
    with console.err().status("Stopping the embedded fleet…"):
        outcome = embedded.stop()
    console.out().print(outcome)
