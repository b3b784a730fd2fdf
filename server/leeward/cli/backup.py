"""Backups and moves: `leeward backup now|list|show|restore|schedule`, `leeward move`, and the
operators' `leeward admin host decommission|show`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import EnvArgument, JsonOption

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.backup import Backup, BackupDetail, Move

POLL_SECONDS = 0.5
WAIT_SECONDS = 6 * 3600.0

BackupArgument = Annotated[
    str, typer.Argument(help="A backup's id or its snapshot's, from `leeward backup list`.")
]


async def backup_id(fleet: FleetClient, env: str, given: str) -> int:
    """A backup named by its id (`7`) or its restic snapshot's (`3f9a0c1e`, at least 8 hex
    digits), among the devserver's own backups."""
    if given.isdigit():
        return int(given)
    if len(given) >= 8 and all(c in "0123456789abcdef" for c in given.lower()):
        listing = await fleet.backups(env)
        for b in listing.backups:
            if b.snapshot and (b.snapshot.startswith(given.lower()[:8])):
                return b.id
        raise CliError(f"{env} has no backup with snapshot {given}: `leeward backup list {env}`.")
    raise CliError(f"{given!r} is not a backup: give its id or its snapshot's, from the list.")


def backup_now(
    env: EnvArgument,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start it and return.")] = False,
    json_: JsonOption = False,
) -> None:
    """Back a devserver's home up now, and show its progress until it is done."""

    async def run(fleet: FleetClient) -> Backup:
        started = await fleet.backup_now(env)
        if no_wait:
            return started
        return await _until_done(fleet, env, started, console.err())

    done = session.with_fleet(run)
    if json_:
        console.print_json(done)
        return
    from leeward.cli import render_backup

    render_backup.finished(console.out(), done)
    if done.state.value == "failed":
        raise CliError(f"Backup {done.id} of {env} failed: {done.message}")


async def _until_done(fleet: FleetClient, env: str, backup: Backup, out: object) -> Backup:
    from rich.console import Console

    assert isinstance(out, Console)
    started = time.monotonic()
    with out.status(f"Backing up {env}…") as status:
        while backup.state.value == "running":
            if time.monotonic() - started > WAIT_SECONDS:
                raise CliError(
                    f"Backup {backup.id} of {env} is still running: see later with "
                    f"`leeward backup list {env}`."
                )
            await asyncio.sleep(POLL_SECONDS)
            listing = await fleet.backups(env)
            backup = next((b for b in listing.backups if b.id == backup.id), backup)
            status.update(
                f"Backing up {env}: {backup.progress:.0%} ({time.monotonic() - started:.0f} s)"
            )
    return backup


def backup_list(env: EnvArgument, json_: JsonOption = False) -> None:
    """A devserver's backups (a deleted one's too, by the name it had), newest first."""
    listing = session.with_fleet(lambda fleet: fleet.backups(env))
    if json_:
        console.print_json(listing)
        return
    from leeward.cli import render_backup

    render_backup.listing(console.out(), listing)


def backup_show(
    env: EnvArgument,
    backup: BackupArgument,
    path: Annotated[str, typer.Option("--path", help="A directory in it, from the home.")] = "",
    json_: JsonOption = False,
) -> None:
    """One backup, and what it holds in a directory."""

    async def show(fleet: FleetClient) -> BackupDetail:
        return await fleet.backup(env, await backup_id(fleet, env, backup), path.strip("/"))

    detail = session.with_fleet(show)
    if json_:
        console.print_json(detail)
        return
    from leeward.cli import render_backup

    render_backup.detail(console.out(), detail)


def backup_restore(
    env: EnvArgument,
    backup: Annotated[
        str | None,
        typer.Argument(help="A backup's id or snapshot; the latest successful one if absent."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Into a new devserver of this name.")
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="Restore this path (from the home) into ENV itself."),
    ] = None,
    flavor: Annotated[str | None, typer.Option("--flavor", help="The new one's flavor.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="The new one's region.")] = None,
    json_: JsonOption = False,
) -> None:
    """Restore a backup: into a new devserver (`--to NAME`, any flavor and region), or some
    paths into the devserver itself (`--path P`, written under ~/.leeward-restore/)."""
    from leeward.cli.environments import _request
    from leeward_protocol.backup import RestoreRequest

    if (to is None) == (not path):
        raise CliError("Give `--to NEW_NAME` (a new devserver) or `--path PATH` (into ENV).")
    if path and (flavor or region):
        raise CliError("--flavor and --region are for `--to`, a new devserver.")
    fields: dict[str, object] = {}
    if to is not None:
        fields["to"] = {"name": to, "flavor": flavor, "region": region}
    else:
        fields["paths"] = [p.strip("/") for p in path or []]
    request = _request(RestoreRequest, fields)

    async def run(fleet: FleetClient) -> object:
        if backup is not None:
            request.backup = await backup_id(fleet, env, backup)
        done = await fleet.restore(env, request)
        if request.to is None:
            return done
        from leeward.cli.progress import follow_until_ready

        return await follow_until_ready(
            fleet, await fleet.environment(done.environment_id), console.err()
        )

    result = session.with_fleet(run)
    if json_:
        console.print_json(result)
        return
    from leeward.cli import render
    from leeward_protocol.backup import Restore
    from leeward_protocol.fleet import Environment

    if isinstance(result, Restore):
        console.out().print(
            f"Restored {result.files} file(s) of backup {result.backup.id} into "
            f"{result.environment}:~/{result.destination}/ (nothing was overwritten)."
        )
    else:
        assert isinstance(result, Environment)
        render.ready(console.out(), result)


def backup_schedule(
    env: EnvArgument,
    every: Annotated[
        str, typer.Option("--every", help="15m, 2h, 1d; or `default` for the fleet's.")
    ],
) -> None:
    """How often a devserver is backed up."""
    minutes = None if every == "default" else _minutes(every)
    status = session.with_fleet(lambda fleet: fleet.backup_schedule(env, minutes))
    console.out().print(f"{env} is backed up every {status.interval_minutes} minutes.")


def _minutes(text: str) -> int:
    units = {"m": 1, "h": 60, "d": 24 * 60}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise CliError(f"--every {text!r}: give minutes, hours or days, like 15m, 2h or 1d.")
    return int(number) * units[unit]


def move(
    env: EnvArgument,
    flavor: Annotated[str | None, typer.Option("--flavor", help="The new flavor.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="The new region.")] = None,
    json_: JsonOption = False,
) -> None:
    """Move a devserver to another flavor and/or region: a final backup, a new devserver
    restored from it, the name handed over, then the old one deleted. Its processes do not
    survive (its files do); a failure leaves it as it was."""
    from leeward.cli.environments import _request
    from leeward_protocol.backup import MoveRequest

    given = {"flavor": flavor, "region": region}
    request = _request(MoveRequest, {k: v for k, v in given.items() if v is not None})

    async def run(fleet: FleetClient) -> Move:
        moving = await fleet.move(env, request)
        return await _follow_move(fleet, moving)

    done = session.with_fleet(run)
    if json_:
        console.print_json(done)
    elif done.state.value == "failed":
        raise CliError(f"The move of {env} failed at {done.message}; it is unchanged.")
    else:
        console.out().print(
            f"{env} moved to {done.region or 'a new host'} ({done.flavor}): `ssh {env}` reaches "
            "the new one, with its files."
        )


async def _follow_move(fleet: FleetClient, moving: Move) -> Move:
    out = console.err()
    started = time.monotonic()
    seen = ""
    with out.status(f"Moving {moving.environment}…") as status:
        while moving.state.value == "running":
            if moving.message != seen:
                if seen:
                    out.print(f"  [green]✓[/] {seen}")
                seen = moving.message
            status.update(
                f"{moving.stage.value}: {moving.message} ({time.monotonic() - started:.0f} s)"
            )
            if time.monotonic() - started > WAIT_SECONDS:
                raise CliError(f"The move is still going: `leeward show {moving.environment}`.")
            await asyncio.sleep(POLL_SECONDS)
            moving = await fleet.move_status(moving.id)
    return moving


# ---------------------------------------------------------------------------- operators


def host_decommission(
    host: Annotated[str, typer.Argument(help="The host.")],
    by: Annotated[
        str, typer.Option("--by", help="Deadline: ISO 8601 (2026-12-24T18:00Z) or 3d, 12h.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Told to owners.")] = "",
    json_: JsonOption = False,
) -> None:
    """Retire a host by a deadline: its devservers move off (live where there is room, cold
    otherwise), their owners told; then it is retired. Resumable; `admin host show` follows."""
    from leeward.cli.environments import _request
    from leeward_protocol.backup import DecommissionHost

    request = _request(DecommissionHost, {"by": _deadline(by), "reason": reason})
    detail = session.with_fleet(lambda fleet: fleet.decommission_host(host, request))
    if json_:
        console.print_json(detail)
        return
    from leeward.cli import render_backup

    render_backup.host(console.out(), detail)


def host_show(
    host: Annotated[str, typer.Argument(help="The host.")], json_: JsonOption = False
) -> None:
    """A host, what lives on it, and its decommission's progress."""
    detail = session.with_fleet(lambda fleet: fleet.host(host))
    if json_:
        console.print_json(detail)
        return
    from leeward.cli import render_backup

    render_backup.host(console.out(), detail)


def _deadline(text: str) -> datetime:
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--by {text!r}: give a date (2026-12-24T18:00Z) or 3d, 12h.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
