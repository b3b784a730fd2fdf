"""The options and arguments that commands across the CLI share, worded once."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print the fleet's JSON.")]
EnvArgument = Annotated[str, typer.Argument(help="Environment name or id.", metavar="ENV")]
