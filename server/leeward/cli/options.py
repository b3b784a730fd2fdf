"""The options and arguments that commands across the CLI share, worded once."""

from __future__ import annotations

from typing import Annotated

import typer


def _machine_readable(value: bool) -> bool:
    """`--json` given: the command's output is for a program (no banner line)."""
    if value:
        from leeward.cli import session

        session.MACHINE_READABLE = True
    return value


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the fleet's JSON.", callback=_machine_readable)
]
EnvArgument = Annotated[str, typer.Argument(help="Environment name or id.", metavar="ENV")]
