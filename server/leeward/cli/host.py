"""`leeward host`, for the platform team: run a machine's host agent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from leeward.cli.errors import CliError, show_tracebacks


def host_serve(
    config: Annotated[Path, typer.Option("--config", help="The host's TOML config (host.toml).")],
) -> None:
    """Run this machine's host agent until SIGTERM or SIGINT: it joins the fleet with its host
    token and does what the fleet asks (docs/operator.md)."""
    from leeward.host.config import HostConfigError, load_host_config
    from leeward.host.serve import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        loaded = load_host_config(config)
        loaded.token()  # an unreadable or exposed token is refused before anything starts
    except HostConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    show_tracebacks()  # from here on, a server's log should say where it failed
    try:
        asyncio.run(serve(loaded))
    except OSError as exc:
        raise CliError(f"The host agent cannot start: {exc.strerror or exc}.") from None
