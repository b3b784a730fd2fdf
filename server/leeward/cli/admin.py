"""`leeward admin`: what an admin asks of the fleet's API. Drain a host for maintenance and put
it back, move any user's environment live, stop and start the zone's DNS for exercises."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import EnvArgument, JsonOption

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.dns import DnsStatus
    from leeward_protocol.fleet import Environment, Host


def host_list(json_: JsonOption = False) -> None:
    """Every host: region, state, capacity, usage."""
    result = session.with_fleet(lambda fleet: fleet.hosts())
    if json_:
        console.print_json(result)
        return
    out = console.out()
    for h in result.hosts:
        heard = {None: "", True: "  reachable", False: "  UNREACHABLE"}[h.reachable]
        out.print(
            f"{h.name:<16} {h.region:<12} {h.state.value:<14} "
            f"{h.used.cpus}/{h.capacity.cpus} CPU  {h.used.memory_gib}/{h.capacity.memory_gib} GiB"
            f"  {h.environments} environments{heard}"
        )


def region_cut(region: Annotated[str, typer.Argument(help="The region.")]) -> None:
    """Cut every link of REGION's hosts (a storm, for exercises): its environments are
    unreachable until `leeward admin region restore`; nothing inside them is told."""
    session.with_fleet(lambda fleet: fleet.region_links(region, cut=True))
    console.out().print(
        f"Region {region}'s links are cut: `leeward admin region restore {region}`."
    )


def region_restore(region: Annotated[str, typer.Argument(help="The region.")]) -> None:
    """Restore REGION's links and the routes to its environments."""
    session.with_fleet(lambda fleet: fleet.region_links(region, cut=False))
    console.out().print(f"Region {region}'s links are restored.")


def host_token(
    host: Annotated[str, typer.Argument(help="The host whose agent joins the fleet.")],
    hours: Annotated[
        int | None, typer.Option("--hours", min=1, help="Validity; no expiry when left out.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Issue HOST's agent its token (the previous one stops working) and print the lines of
    its host.toml that join it to this fleet. Shown once."""
    issued = session.with_fleet(lambda fleet: fleet.host_token(host, hours))
    if json_:
        console.print_json(issued)
        return
    out = console.out()
    out.print(f"# host.toml of {issued.host} (docs/operator.md); keep the token secret (0600)")
    out.print(f'name = "{issued.host}"')
    out.print(f'fleet_url = "{issued.fleet_url}"')
    out.print(f'fleet_key = "{issued.fleet_key}"')
    out.print(f"# put this in the token_file, alone, mode 0600: {issued.token}")
    if issued.expires_at is not None:
        out.print(f"# the token expires at {issued.expires_at.isoformat()}")


def host_drain(
    host: Annotated[str, typer.Argument(help="The host to drain.")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until it is in maintenance.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 600.0,
) -> None:
    """Move every environment on HOST live to another host of its region, then put HOST in
    maintenance. Nothing new is placed on it from now on."""
    import time

    async def drain(fleet: FleetClient) -> Host | None:
        state = (await fleet.drain_host(host)).state
        console.out().print(f"{host} is {state.value}: moving its environments live.")
        deadline = time.monotonic() + timeout
        while wait:
            found = next(h for h in (await fleet.hosts()).hosts if h.name == host)
            if found.state.value != "draining":
                return found
            if time.monotonic() > deadline:
                raise CliError(
                    f"{host} is still draining after {timeout:g} s with "
                    f"{found.environments} environments left: see the fleet's log for "
                    "ones that cannot move (no room elsewhere in the region?)."
                )
            await asyncio.sleep(0.5)
        return None

    found = session.with_fleet(drain)
    if found is not None:
        console.out().print(
            f"{host} is {found.state.value} ({found.environments} environments left)."
        )


def host_activate(host: Annotated[str, typer.Argument(help="The host.")]) -> None:
    """Put HOST back into service (after maintenance, or to stop a drain)."""
    activated = session.with_fleet(lambda fleet: fleet.activate_host(host))
    console.out().print(f"{host} is {activated.state.value}.")


def env_migrate(
    env: EnvArgument,
    host: Annotated[
        str | None, typer.Option("--host", help="The host to move to (same region).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it is done.")] = True,
    json_: JsonOption = False,
) -> None:
    """Move one environment live to another host of its region."""

    async def migrate(fleet: FleetClient) -> Environment:
        moved = await fleet.migrate(env, host)
        while wait and moved.state.value == "migrating":
            await asyncio.sleep(0.2)
            moved = await fleet.environment(moved.id)
        return moved

    moved = session.with_fleet(migrate)
    if json_:
        console.print_json(moved)
    else:
        console.out().print(
            f"{moved.name} is {moved.state.value} on {moved.host}: {moved.status_message}"
        )


def dns_status(json_: JsonOption = False) -> None:
    """Whether the zone's DNS server answers (serving, closed, black-hole), and where."""
    _print_dns(session.with_fleet(lambda fleet: fleet.dns()), json_)


def dns_stop(
    black_hole: Annotated[
        bool,
        typer.Option(
            "--black-hole", help="Keep the port open and answer nothing (a lost resolver)."
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Stop the zone's DNS server: closed (nothing listens), or black-holed."""
    _print_dns(session.with_fleet(lambda fleet: fleet.stop_dns(black_hole=black_hole)), json_)


def dns_start(json_: JsonOption = False) -> None:
    """Start the zone's DNS server again."""
    _print_dns(session.with_fleet(lambda fleet: fleet.start_dns()), json_)


def _print_dns(status: DnsStatus, json_: bool) -> None:
    if json_:
        console.print_json(status)
    else:
        console.out().print(
            f"DNS for {status.zone} at {status.address or '(no address)'}: {status.mode}."
        )
