"""`leeward fleet`, for the platform team: run the fleet backend, and create tokens straight in
its database (how the first admin gets one)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from leeward.cli.errors import CliError, show_tracebacks


def fleet_serve(
    config: Annotated[Path, typer.Option("--config", help="The fleet's TOML config.")],
    database: Annotated[
        str | None,
        typer.Option("--database", help="SQLAlchemy URL, e.g. postgresql+asyncpg://..."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides listen_port.")] = None,
) -> None:
    """Run the fleet backend until SIGTERM or SIGINT."""
    show_tracebacks()  # a server's log should say where it failed
    from leeward.fleet.config import ConfigError
    from leeward.fleet.main import serve

    try:
        serve(config, database=database, port=port)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def token_create(
    config: Annotated[Path, typer.Option("--config", help="The fleet's TOML config.")],
    user: Annotated[str, typer.Option("--user", help="Created if it does not exist.")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role.")] = False,
    hours: Annotated[
        int | None, typer.Option("--hours", help="Validity; no expiry if absent.")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="Overrides the config's database.")
    ] = None,
) -> None:
    """Create a user's token directly in the fleet's database (how the first admin gets one)."""
    from leeward.fleet.bootstrap import issue_token
    from leeward.fleet.config import ConfigError, load_config
    from leeward_protocol.fleet import Role

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if database is not None:
        loaded.database = database
    role = Role.ADMIN if admin else Role.USER
    try:
        token = asyncio.run(
            issue_token(loaded, user, role, hours=hours, description="leeward fleet token")
        )
    except ValueError as exc:
        raise CliError(f"Cannot create the user {user!r}: {exc}.") from None
    print(token)
