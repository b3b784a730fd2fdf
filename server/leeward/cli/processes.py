"""The other processes the `leeward` command runs: ssh's ProxyCommand, an environment's agent
and the VS Code extension's daemon. Their own packages hold them; these commands hand over.
(The console script starts the proxy and `daemon --stdio` before typer, for speed: entry.py.)"""

from __future__ import annotations

from typing import Annotated

import typer

from leeward.cli.errors import CliError


def proxy(ctx: typer.Context) -> None:
    """ssh's ProxyCommand, written by config-ssh: the resumable relay to ENV.

    `leeward proxy --help` lists its options. (The console script starts it without this
    CLI framework, for speed.)"""
    from leeward.relay.proxy import main as proxy_main

    raise typer.Exit(proxy_main(list(ctx.args)))


def agent(ctx: typer.Context) -> None:
    """Run an environment's agent (started by the provider; arguments pass through)."""
    from leeward.agent.main import main as agent_main

    raise typer.Exit(agent_main(list(ctx.args)))


def daemon(
    stdio: Annotated[
        bool, typer.Option("--stdio", help="Speak JSON-RPC on stdin and stdout (the only mode).")
    ] = False,
) -> None:
    """Run the daemon that the VS Code extension talks to (JSON-RPC over stdio)."""
    if not stdio:
        raise CliError(
            "The daemon speaks JSON-RPC over stdin and stdout: run `leeward daemon --stdio` "
            "(the VS Code extension starts it so)."
        )
    from leeward.daemon.server import serve_stdio

    serve_stdio()
