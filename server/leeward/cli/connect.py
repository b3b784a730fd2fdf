"""Reaching your environments from this machine: `leeward config-ssh` writes the ssh files,
`ssh` connects with OpenSSH, `locate` finds an address as `leeward proxy` does, and `status` shows
the sessions the proxies carry."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import EnvArgument, JsonOption

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.fleet import Environment


def config_ssh(
    include: Annotated[
        bool | None,
        typer.Option(
            "--include/--no-include",
            help="Add (or do not add) an Include line at the top of ~/.ssh/config; asks if absent.",
        ),
    ] = None,
) -> None:
    """Write ~/.ssh/leeward/config and known_hosts, so `ssh NAME` reaches your environments."""
    from leeward.client.access import refresh_ssh
    from leeward.client.sshconfig import add_include, has_include, include_line

    paths = session.default_paths()
    entries, _ = session.with_fleet(lambda fleet: refresh_ssh(fleet, paths))
    out = console.out()
    names = ", ".join(e.alias for e in entries) or "none running yet"
    out.print(f"Wrote {paths.ssh_config} ({names}) and {paths.known_hosts}.")
    user_config = Path.home() / ".ssh" / "config"
    if has_include(user_config, paths):
        return
    line = include_line(paths)
    if include is None:
        if sys.stdin.isatty():
            include = typer.confirm(f"Add `{line}` at the top of {user_config}?", default=True)
        else:
            out.print(f"To use plain `ssh NAME`, add this line at the top of {user_config}:")
            print(line)
            return
    if include:
        add_include(user_config, paths)
        out.print(f"Added `{line}` at the top of {user_config}.")
    else:
        out.print(f"Use `ssh -F {paths.ssh_config} NAME`, or add `{line}` to {user_config}.")


def ssh(
    env: EnvArgument,
    command: Annotated[
        list[str] | None, typer.Argument(help="A command to run instead of a shell.")
    ] = None,
) -> None:
    """Connect with OpenSSH (renewing the certificate and ssh config first)."""
    from leeward.client.access import refresh_ssh
    from leeward_protocol.fleet import CONNECTABLE_STATES, EnvironmentState

    paths = session.default_paths()

    async def reach(fleet: FleetClient) -> Environment:
        target = await fleet.environment(env)
        if target.state in CONNECTABLE_STATES:  # a stopped one: `leeward proxy` starts it
            await refresh_ssh(fleet, paths)
        return target

    target = session.with_fleet(reach)
    if target.state not in CONNECTABLE_STATES:
        hints = {
            EnvironmentState.PROVISIONING: f"wait for it (`leeward show {target.name}`)",
            EnvironmentState.FAILED: "create another one with `leeward create`",
        }
        hint = hints.get(target.state, "create another one with `leeward create`")
        raise CliError(f"{target.name} is {target.state.value}, not running: {hint}.")
    argv = ["ssh", "-F", str(paths.ssh_config.absolute()), target.name]
    if command and command[0] == "--":  # click keeps `--` when it comes after ENV
        command = command[1:]
    if command:
        argv += ["--", *command]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp("ssh", argv)  # noqa: S606 - become ssh: its exit code, its TTY
    except FileNotFoundError:
        raise CliError("OpenSSH's `ssh` is not on PATH: install openssh-client.") from None


def locate(env: EnvArgument, json_: JsonOption = False) -> None:
    """Find an environment as `leeward proxy` does: the fleet API, the zone's DNS and the
    last-known-good cache raced, each address checked by its SSH host certificate."""
    import json

    from leeward.client.locate import AddressCache, Finder, host_certificate_verifier
    from leeward.client.refusals import LocateError

    paths = session.default_paths()
    creds = session.credentials(paths)
    cache = AddressCache.of(paths, creds.fleet)
    finder = Finder(creds.fleet, creds.token, cache, host_certificate_verifier(paths.known_hosts))
    try:
        found = asyncio.run(finder.locate(env))
    except LocateError as exc:
        raise CliError(str(exc)) from None
    if json_:
        fields = ("name", "fqdn", "address", "ssh_port", "relay_port", "source", "seconds", "notes")
        print(json.dumps({f: getattr(found, f) for f in fields}, indent=2))
        return
    out = console.out()
    out.print(
        f"{found.fqdn} at {found.address}:{found.ssh_port} from the {found.source} "
        f"in {found.seconds * 1000:.0f} ms (host certificate verified)."
    )
    for note in found.notes:
        out.print(f"  {note}")


def status(json_: JsonOption = False) -> None:
    """The SSH sessions that `leeward proxy` carries on this machine: connected, resuming or
    failed, their round trip, and where the address came from (api, dns, cache)."""
    import dataclasses
    import json

    from leeward.daemon.sessions import read_sessions

    sessions = read_sessions(session.default_paths().state_dir / "sessions")
    if json_:
        print(json.dumps([dataclasses.asdict(s) for s in sessions], indent=2))
        return
    out = console.out()
    if not sessions:
        out.print("No SSH session through `leeward proxy` on this machine.")
        return
    for s in sessions:
        rtt = f"{s.rtt_ms:g} ms" if s.rtt_ms is not None else "-"
        via = (s.source or "-") + (" (DNS bypass)" if s.dns_down else "")
        line = f"{s.env:<24} {s.state:<11} {rtt:>9}  via {via:<18} pid {s.pid}"
        out.print(line + (f"  {s.reason}" if s.reason else ""))
