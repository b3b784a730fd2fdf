"""Create an environment and show its stages live until it is running (or has failed)."""

from __future__ import annotations

import asyncio
import time
import uuid

from rich.console import Console

from leeward.cli.errors import CliError
from leeward.client.api import FleetClient, FleetUnreachable
from leeward_protocol.fleet import (
    CreateContainer,
    CreateDevserver,
    Environment,
    EnvironmentState,
)

POLL_SECONDS = 0.25
READY_SECONDS = 600.0


async def create_and_wait(
    fleet: FleetClient,
    request: CreateDevserver | CreateContainer,
    console: Console,
    *,
    deadline_seconds: float = READY_SECONDS,
) -> Environment:
    key = str(uuid.uuid4())
    env = await fleet.create(request, idempotency_key=key)
    return await follow_until_ready(fleet, env, console, deadline_seconds=deadline_seconds)


async def follow_until_ready(
    fleet: FleetClient,
    env: Environment,
    console: Console,
    *,
    deadline_seconds: float = READY_SECONDS,
) -> Environment:
    """Show a new environment's stages live until it is running; CliError if it failed."""
    what = env.kind.value
    started = time.monotonic()
    with console.status(f"Creating a {what}…") as status:
        seen: list[str] = []

        def stage(env: Environment) -> None:
            message = env.status_message or env.state.value
            if not seen or seen[-1] != message:
                if seen:
                    console.print(f"  [green]✓[/] {seen[-1]}")
                seen.append(message)
            elapsed = time.monotonic() - started
            status.update(f"{what} [bold]{env.name}[/]: {message} ({elapsed:.0f} s)")

        stage(env)
        while env.state is EnvironmentState.PROVISIONING:
            if time.monotonic() - started > deadline_seconds:
                raise CliError(
                    f"{env.name} is still provisioning after {deadline_seconds:.0f} s "
                    f"({env.status_message or 'no news'}): check `leeward show {env.name}`."
                )
            await asyncio.sleep(POLL_SECONDS)
            try:
                env = await fleet.environment(env.id)
            except FleetUnreachable:
                continue  # the fleet may be restarting; the deadline bounds the wait
            stage(env)
    if env.state is EnvironmentState.FAILED:
        raise CliError(
            f"{what} {env.name} failed: {env.status_message or 'no reason given'}; "
            "try again, or another region with `--region`."
        )
    if env.state is not EnvironmentState.RUNNING:
        raise CliError(f"{env.name} is {env.state.value}: create another one.")
    if seen:
        console.print(f"  [green]✓[/] {seen[-1]}")
    return env
