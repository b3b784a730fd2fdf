"""Your environments: `leeward list`, `show`, `create devserver|container`, `delete`,
`extend` and `start`."""

from __future__ import annotations

import sys
from typing import Annotated, Any, TypeVar

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import EnvArgument, JsonOption

T = TypeVar("T")

RegionOption = Annotated[
    str | None, typer.Option("--region", help="A region; the one with the most room if absent.")
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="A DNS label; generated when absent.")
]


def list_environments(json_: JsonOption = False) -> None:
    """Your environments, and the announcements that concern them."""
    from leeward.cli import render
    from leeward.cli.banner import beside, print_first_line

    if json_:
        console.print_json(session.with_fleet(lambda fleet: fleet.environments()))
        return
    result, found = session.with_fleet(beside(lambda fleet: fleet.environments()), banner=False)
    print_first_line(found)
    render.environments(console.out(), result.environments)
    _announced(found, {e.name for e in result.environments})


def show(env: EnvArgument, json_: JsonOption = False) -> None:
    """One environment in detail, and the announcements that concern it."""
    from leeward.cli import render
    from leeward.cli.banner import beside, print_first_line

    if json_:
        console.print_json(session.with_fleet(lambda fleet: fleet.environment(env)))
        return
    result, found = session.with_fleet(beside(lambda fleet: fleet.environment(env)), banner=False)
    print_first_line(found)
    render.environment(console.out(), result)
    _announced(found, {result.name})


def _announced(found: Any, shown: set[str]) -> None:
    if found:
        from leeward.cli import render_announcements

        render_announcements.under_environments(console.out(), found, shown)


def create_devserver(
    flavor: Annotated[str, typer.Option("--flavor", help="A flavor from `leeward catalog`.")] = (
        "small"
    ),
    region: RegionOption = None,
    name: NameOption = None,
    lifespan: Annotated[
        str | None,
        typer.Option("--lifespan", help="8h, 3d or permanent; the fleet's default if absent."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create a long-lived devserver and wait until it is ready."""
    from leeward.cli.lifespan import parse_lifespan
    from leeward_protocol.fleet import CreateDevserver, EnvironmentKind

    fields: dict[str, Any] = {
        "kind": EnvironmentKind.DEVSERVER,
        "flavor": flavor,
        "region": region,
        "name": name,
    }
    if lifespan is not None:
        fields["lifespan"], fields["hours"] = parse_lifespan(lifespan)
    _create(_request(CreateDevserver, fields), json_)


def create_container(
    profile: Annotated[str, typer.Option("--profile", help="A profile from `leeward catalog`.")] = (
        "web"
    ),
    region: RegionOption = None,
    name: NameOption = None,
    hours: Annotated[
        int | None, typer.Option("--hours", help="Hours until it expires; the fleet's default.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create an on-demand container (from a warm pool when one is ready)."""
    from leeward_protocol.fleet import CreateContainer, EnvironmentKind

    fields: dict[str, Any] = {
        "kind": EnvironmentKind.CONTAINER,
        "profile": profile,
        "region": region,
        "name": name,
        "hours": hours,
    }
    _create(_request(CreateContainer, fields), json_)


def _request(model: type[T], fields: dict[str, Any]) -> T:
    from pydantic import BaseModel, ValidationError

    assert issubclass(model, BaseModel)
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        from leeward.common.validation import first_fault

        fault = first_fault(exc)
        raise CliError(
            fault.sentence() if fault.field is None else f"--{fault.sentence()}"
        ) from None


def _create(request: Any, json_: bool) -> None:
    from leeward.cli.progress import create_and_wait

    env = session.with_fleet(lambda fleet: create_and_wait(fleet, request, console.err()))
    if json_:
        console.print_json(env)
    else:
        from leeward.cli import render

        render.ready(console.out(), env)


def delete(
    env: EnvArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an environment (its home directory goes with it)."""
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"Refusing to delete {env} without confirmation: pass `--yes` to delete it."
            )
        target = session.with_fleet(lambda fleet: fleet.environment(env))
        typer.confirm(
            f"Delete {target.kind.value} {target.name} ({target.fqdn})? Its files go with it",
            abort=True,
        )

    deleted = session.with_fleet(lambda fleet: fleet.delete(env))
    console.out().print(f"Deleting {deleted.kind.value} {deleted.name}.")


def extend(
    env: EnvArgument,
    hours: Annotated[int, typer.Option("--hours", help="Hours to add to its expiry.")],
    json_: JsonOption = False,
) -> None:
    """Push back when an environment expires."""
    from leeward.cli import render

    if hours <= 0:
        raise CliError("--hours must be a positive number of hours.")

    result = session.with_fleet(lambda fleet: fleet.extend(env, hours))
    if json_:
        console.print_json(result)
    else:
        console.out().print(f"{result.name} now expires {render.when(result.expires_at)}.")


START_WAIT_SECONDS = 300.0
"""How long `leeward start` waits for a stopped environment to be running again."""


def start(env: EnvArgument, json_: JsonOption = False) -> None:
    """Start an environment stopped for being idle again, with its home (ssh to it does too)."""
    import asyncio
    import time

    from leeward.client.api import FleetClient
    from leeward_protocol.fleet import Environment, EnvironmentState

    async def go(fleet: FleetClient) -> Environment:
        current = await fleet.start(env)
        if current.state == EnvironmentState.PROVISIONING:
            console.err().print(f"Starting {current.name} again, with its home...")
        deadline = time.monotonic() + START_WAIT_SECONDS
        while current.state == EnvironmentState.PROVISIONING:
            if time.monotonic() > deadline:
                raise CliError(
                    f"{current.name} is still starting after {START_WAIT_SECONDS:g} s; "
                    f"`leeward show {current.name}` says what it is doing."
                )
            await asyncio.sleep(0.5)  # one step of a poll with a deadline
            current = await fleet.environment(current.id)
        if current.state not in (EnvironmentState.RUNNING, EnvironmentState.MIGRATING):
            raise CliError(
                f"{current.name} did not start: it is {current.state.value}"
                + (f" ({current.status_message})." if current.status_message else ".")
            )
        return current

    result = session.with_fleet(go)
    if json_:
        console.print_json(result)
    else:
        console.out().print(f"{result.name} is running: `ssh {result.name}`.")
