"""The `leeward` console script. Processes that start once per window or per connection (the
daemon, `leeward proxy`) skip the command-line framework (typer, rich): their start time is the
user's."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["daemon"] and args[1:] == ["--stdio"]:
        from leeward.daemon.server import serve_stdio

        serve_stdio()
        return
    if args[:1] == ["proxy"]:  # ssh's ProxyCommand: once per SSH connection
        from leeward.relay.proxy import main as proxy_main

        sys.exit(proxy_main(args[1:]))
    from leeward.cli.main import main as cli_main

    cli_main()
