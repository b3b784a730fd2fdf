"""`leeward profile show|history|restore`: the files and config.toml that follow you to every
new environment, as the fleet holds them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import JsonOption

VersionOption = Annotated[
    int | None,
    typer.Option("--version", "-v", min=1, help="A kept version (`leeward profile history`)."),
]
PathArgument = Annotated[
    str | None,
    typer.Argument(help="A file, relative to the home (e.g. .bashrc).", metavar="[PATH]"),
]


def show(
    path: PathArgument = None, version: VersionOption = None, json_: JsonOption = False
) -> None:
    """The profile's files and config (the latest version unless --version); with PATH, that
    file's content as stored, on stdout."""
    from leeward.cli import render_profile
    from leeward.common.profilefiles import check_path

    if path is not None:
        bad = check_path(path.removeprefix("~/"))
        if bad is not None:
            raise CliError(bad.reason)
        content: bytes = session.with_fleet(
            lambda fleet: fleet.profile_file(path.removeprefix("~/"), version)
        )
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return
    profile = session.with_fleet(lambda fleet: fleet.profile(version))
    if json_:
        console.print_json(profile)
    else:
        render_profile.profile(console.out(), profile)


def history(path: PathArgument = None, json_: JsonOption = False) -> None:
    """The kept versions, newest first (with PATH: those that changed it)."""
    from leeward.cli import render_profile

    result = session.with_fleet(
        lambda fleet: fleet.profile_history(path.removeprefix("~/") if path else None)
    )
    if json_:
        console.print_json(result)
    else:
        render_profile.history(console.out(), result, path)


def restore(
    version: Annotated[int, typer.Argument(min=1, help="The version to bring back.")],
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Only these files (default: the whole version, config included)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Make a kept version (or some of its files) the latest again; nothing is lost.

    What it replaces stays in the history. Running environments pick it up within seconds."""
    from leeward_protocol.profile import RestoreProfile

    wanted = [p.removeprefix("~/") for p in paths or []]
    result = session.with_fleet(
        lambda fleet: fleet.restore_profile(RestoreProfile(version=version, paths=wanted))
    )
    if json_:
        console.print_json(result)
        return
    what = ", ".join(wanted) if wanted else "everything"
    console.out().print(
        f"Restored {what} from version {version}: the profile is now at version {result.version}."
    )
