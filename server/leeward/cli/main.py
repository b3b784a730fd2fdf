"""`leeward`: the command line. Everything the VS Code extension can do, from a terminal.

Heavy modules (aiohttp, asyncssh, the fleet) are imported inside the commands that need them,
so `leeward --help` and `leeward ssh` start fast.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError, fail, show_tracebacks
from leeward.cli.options import EnvArgument, JsonOption
from leeward.cli.profile import profile_app

if TYPE_CHECKING:
    from leeward.cli.embedded import EmbeddedFleet
    from leeward.client.api import FleetClient
    from leeward.client.paths import Paths
    from leeward_protocol.fleet import DnsStatus, Environment, Host, WhoAmI

T = TypeVar("T")

app = typer.Typer(
    name="leeward",
    help="Development environments that stay reachable through the fleet's weather.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
create_app = typer.Typer(help="Create a devserver or an on-demand container.", no_args_is_help=True)
fleet_app = typer.Typer(help="Run the fleet backend (operators).", no_args_is_help=True)
token_app = typer.Typer(help="Tokens, straight from the fleet's database.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Operate the fleet (admins): hosts, environments, DNS.", no_args_is_help=True
)
host_app = typer.Typer(help="Hosts: drain one for maintenance, put it back.", no_args_is_help=True)
env_admin_app = typer.Typer(help="Any user's environments: migrate.", no_args_is_help=True)
dns_app = typer.Typer(
    help="The zone's DNS server: stop and start it for exercises.", no_args_is_help=True
)
app.add_typer(create_app, name="create")
app.add_typer(fleet_app, name="fleet")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(host_app, name="host")
admin_app.add_typer(env_admin_app, name="env")
admin_app.add_typer(dns_app, name="dns")
fleet_app.add_typer(token_app, name="token")
app.add_typer(profile_app, name="profile")
features_app = typer.Typer(
    help="Features from the fleet's catalog, to name in config.toml.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks.", envvar="LEEWARD_DEBUG")
    ] = False,
) -> None:
    if debug:
        show_tracebacks()


# -- identity -------------------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print the version of this client."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        print(f"leeward {installed('leeward')}")
    except PackageNotFoundError:
        print("leeward (not installed: run `pip install -e .`)")


@app.command()
def login(
    fleet: Annotated[
        str | None, typer.Option("--fleet", help="The fleet's URL, e.g. http://127.0.0.1:7420.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Your token; read from stdin when absent.")
    ] = None,
) -> None:
    """Sign in to a fleet: check the token, store it, and get an SSH certificate."""
    from leeward.client.credentials import CredentialsError, load_credentials

    paths = session.default_paths()
    url = fleet
    if url is None:
        try:
            url = load_credentials(paths.credentials).fleet
        except CredentialsError:
            url = "http://127.0.0.1:7420"
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if token is None:
        if sys.stdin.isatty():
            import getpass

            token = getpass.getpass(f"Token for {url}: ")
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("No token given: pass `--token T` or pipe it on stdin.")
    who = asyncio.run(session.sign_in(paths, url, token))
    console.out().print(f"Signed in to {url} as [bold]{who.user}[/] ({who.role.value}).")


@app.command()
def whoami(json_: JsonOption = False) -> None:
    """Who the fleet thinks you are."""

    async def ask(fleet: FleetClient) -> tuple[WhoAmI, str]:
        return await fleet.whoami(), fleet.url

    who, url = session.with_fleet(ask)
    if json_:
        console.print_json(who)
    else:
        console.out().print(f"{who.user} ({who.role.value}) at {url}")


# -- reading --------------------------------------------------------------------------------------


@app.command()
def catalog(json_: JsonOption = False) -> None:
    """Regions, devserver flavors and container profiles on offer."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.catalog())
    if json_:
        console.print_json(result)
    else:
        render.catalog(console.out(), result)


@features_app.command("list")
def features_list(json_: JsonOption = False) -> None:
    """The features you can name in ~/.config/leeward/config.toml (`features = [...]`)."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.features())
    if json_:
        console.print_json(result)
    else:
        render.features(console.out(), result.features)


@app.command("list")
def list_(json_: JsonOption = False) -> None:
    """Your environments."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.environments())
    if json_:
        console.print_json(result)
    else:
        render.environments(console.out(), result.environments)


@app.command()
def show(env: EnvArgument, json_: JsonOption = False) -> None:
    """One environment in detail."""
    from leeward.cli import render

    result = session.with_fleet(lambda fleet: fleet.environment(env))
    if json_:
        console.print_json(result)
    else:
        render.environment(console.out(), result)


# -- changing -------------------------------------------------------------------------------------

RegionOption = Annotated[
    str | None, typer.Option("--region", help="A region; the one with the most room if absent.")
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="A DNS label; generated when absent.")
]


@create_app.command("devserver")
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


@create_app.command("container")
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


@app.command()
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


@app.command()
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


# -- ssh ------------------------------------------------------------------------------------------


@app.command("config-ssh")
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


@app.command(
    context_settings={"allow_interspersed_args": False},
)
def ssh(
    env: EnvArgument,
    command: Annotated[
        list[str] | None, typer.Argument(help="A command to run instead of a shell.")
    ] = None,
) -> None:
    """Connect with OpenSSH (renewing the certificate and ssh config first)."""
    from leeward.client.access import refresh_ssh
    from leeward_protocol.fleet import REACHABLE_STATES, EnvironmentState

    paths = session.default_paths()

    async def reach(fleet: FleetClient) -> Environment:
        target = await fleet.environment(env)
        if target.state in REACHABLE_STATES:
            await refresh_ssh(fleet, paths)
        return target

    target = session.with_fleet(reach)
    if target.state not in REACHABLE_STATES:
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


@app.command("locate")
def locate_command(env: EnvArgument, json_: JsonOption = False) -> None:
    """Find an environment as `leeward proxy` does: the fleet API, the zone's DNS and the
    last-known-good cache raced, each address checked by its SSH host certificate."""
    import json

    from leeward.client.locate import AddressCache, Finder, LocateError, host_certificate_verifier

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


# -- the embedded fleet ---------------------------------------------------------------------------


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option("--port", help="The API's port (kept in the fleet's config).")
    ] = None,
) -> None:
    """Start the embedded fleet on this machine and sign in to it as an admin."""
    import getpass

    from leeward.cli.embedded import EmbeddedFleet, healthy, port_in_use

    paths = session.default_paths()
    out = console.out()
    embedded = EmbeddedFleet.of(paths)
    running = embedded.pid()
    if running is not None and port is not None and not embedded.url().endswith(f":{port}"):
        raise CliError(
            f"The embedded fleet already runs at {embedded.url()}: run `leeward down` first "
            f"to move it to port {port}."
        )
    if running is None:
        embedded.ensure_config(port)
    url = embedded.url()
    if running is not None and healthy(url) and (user := _signed_in_as(paths, url)):
        out.print(f"The embedded fleet is already running at {url}; you are signed in as {user}.")
        return
    if running is None:
        if port_in_use(url):
            raise CliError(
                f"Something else is listening at {url}: stop it, or run `leeward up --port N` "
                "with a free port."
            )
        with console.err().status(f"Starting the embedded fleet at {url}…"):
            dns = embedded.ensure_dns_port()
            pid = embedded.start()
            embedded.wait_healthy(url, pid)
        out.print(f"Started the embedded fleet at {url} (log: {embedded.log_path}).")
        if dns is not None:
            out.print(f"Its DNS serves the zone at {dns} (UDP and TCP).")
    else:
        embedded.wait_healthy(url, running)
    if user := _signed_in_as(paths, url):  # restarted: the stored token is still good
        out.print(f"Signed in as [bold]{user}[/], as before.")
    else:
        token = asyncio.run(_issue_admin_token(embedded.config_path, getpass.getuser()))
        who = asyncio.run(session.sign_in(paths, url, token))
        out.print(f"Signed in as [bold]{who.user}[/] ({who.role.value}).")
    _remember_embedded_dns(paths, embedded, url)
    out.print("Next: `leeward create devserver --name mybox`, then `leeward ssh mybox`.")


def _remember_embedded_dns(paths: Paths, embedded: EmbeddedFleet, url: str) -> None:
    """Tell this machine's clients where the embedded fleet serves its zone (they also learn it
    from the catalog): `leeward proxy` and `leeward locate` race it with the API and the cache."""
    from leeward.client.locate import AddressCache
    from leeward.fleet.config import ConfigError, load_config

    try:
        config = load_config(embedded.config_path)
    except ConfigError:
        return
    if config.dns.enabled:
        dns = f"{config.dns.listen_host}:{config.dns.port}"
        AddressCache.of(paths, url).remember_fleet(config.zone, dns)


async def _issue_admin_token(config_path: Path, user: str) -> str:
    from leeward.fleet.config import ConfigError, load_config
    from leeward_protocol.fleet import Role

    try:
        from leeward.fleet.bootstrap import issue_token
    except ImportError as exc:
        raise CliError(
            f"This installation has no fleet backend ({exc}): reinstall leeward."
        ) from None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        token: str = await issue_token(config, user, Role.ADMIN, description="leeward up")
    except ValueError as exc:
        raise CliError(f"Cannot make {user!r} the fleet's user: {exc}.") from None
    return token


def _signed_in_as(paths: Paths, url: str) -> str | None:
    """The user whose stored token works at `url`, with a key and certificate; else None."""
    from leeward.client.api import FleetClient
    from leeward.client.credentials import CredentialsError, load_credentials
    from leeward.common.errors import FleetError

    try:
        creds = load_credentials(paths.credentials)
    except CredentialsError:
        return None
    if creds.fleet.rstrip("/") != url.rstrip("/"):
        return None

    async def check() -> str | None:
        async with FleetClient(creds.fleet, creds.token, timeout=5) as fleet:
            try:
                who = await fleet.whoami()
            except FleetError:
                return None
        return who.user if paths.identity.exists() and paths.certificate.exists() else None

    return asyncio.run(check())


@app.command()
def down() -> None:
    """Stop the embedded fleet (and, with it, its environments' agents)."""
    from leeward.cli.embedded import EmbeddedFleet

    embedded = EmbeddedFleet.of(session.default_paths())
    if embedded.pid() is None:
        embedded.pid_path.unlink(missing_ok=True)
        console.out().print("The embedded fleet is not running.")
        return
    with console.err().status("Stopping the embedded fleet…"):
        outcome = embedded.stop()
    console.out().print(outcome)


# -- processes ------------------------------------------------------------------------------------


@fleet_app.command("serve")
def fleet_serve(
    config: Annotated[Path, typer.Option("--config", help="The fleet's TOML config.")],
    database: Annotated[
        str | None,
        typer.Option("--database", help="SQLAlchemy URL, e.g. postgresql+asyncpg://..."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides listen_port.")] = None,
) -> None:
    """Run the fleet backend until SIGTERM or SIGINT."""
    show_tracebacks()  # a server's log should say where it failed
    from leeward.fleet.config import ConfigError
    from leeward.fleet.main import serve

    try:
        serve(config, database=database, port=port)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@token_app.command("create")
def fleet_token_create(
    config: Annotated[Path, typer.Option("--config", help="The fleet's TOML config.")],
    user: Annotated[str, typer.Option("--user", help="Created if it does not exist.")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role.")] = False,
    hours: Annotated[
        int | None, typer.Option("--hours", help="Validity; no expiry if absent.")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="Overrides the config's database.")
    ] = None,
) -> None:
    """Create a user's token directly in the fleet's database (how the first admin gets one)."""
    from leeward.fleet.bootstrap import issue_token
    from leeward.fleet.config import ConfigError, load_config
    from leeward_protocol.fleet import Role

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if database is not None:
        loaded.database = database
    role = Role.ADMIN if admin else Role.USER
    try:
        token = asyncio.run(
            issue_token(loaded, user, role, hours=hours, description="leeward fleet token")
        )
    except ValueError as exc:
        raise CliError(f"Cannot create the user {user!r}: {exc}.") from None
    print(token)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def proxy(ctx: typer.Context) -> None:
    """ssh's ProxyCommand, written by config-ssh: the resumable relay to ENV.

    `leeward proxy --help` lists its options. (The console script starts it without this
    CLI framework, for speed.)"""
    from leeward.relay.proxy import main as proxy_main

    raise typer.Exit(proxy_main(list(ctx.args)))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def agent(ctx: typer.Context) -> None:
    """Run an environment's agent (started by the provider; arguments pass through)."""
    from leeward.agent.main import main as agent_main

    raise typer.Exit(agent_main(list(ctx.args)))


@app.command()
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


@app.command()
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


# -- operations (admins) --------------------------------------------------------------------------


@host_app.command("list")
def host_list(json_: JsonOption = False) -> None:
    """Every host: region, state, capacity, usage."""

    result = session.with_fleet(lambda fleet: fleet.hosts())
    if json_:
        console.print_json(result)
        return
    out = console.out()
    for h in result.hosts:
        out.print(
            f"{h.name:<16} {h.region:<12} {h.state.value:<14} "
            f"{h.used.cpus}/{h.capacity.cpus} CPU  {h.used.memory_gib}/{h.capacity.memory_gib} GiB"
            f"  {h.environments} environments"
        )


@host_app.command("drain")
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


@host_app.command("activate")
def host_activate(host: Annotated[str, typer.Argument(help="The host.")]) -> None:
    """Put HOST back into service (after maintenance, or to stop a drain)."""

    activated = session.with_fleet(lambda fleet: fleet.activate_host(host))
    console.out().print(f"{host} is {activated.state.value}.")


def _print_dns(status: DnsStatus, json_: bool) -> None:
    if json_:
        console.print_json(status)
    else:
        console.out().print(
            f"DNS for {status.zone} at {status.address or '(no address)'}: {status.mode}."
        )


@dns_app.command("status")
def dns_status(json_: JsonOption = False) -> None:
    """Whether the zone's DNS server answers (serving, closed, black-hole), and where."""
    _print_dns(session.with_fleet(lambda fleet: fleet.dns()), json_)


@dns_app.command("stop")
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


@dns_app.command("start")
def dns_start(json_: JsonOption = False) -> None:
    """Start the zone's DNS server again."""
    _print_dns(session.with_fleet(lambda fleet: fleet.start_dns()), json_)


@env_admin_app.command("migrate")
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


# -- entry point ----------------------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except CliError as exc:
        fail(exc, exc.message, exc.exit_code, exc.details)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # every failure is one sentence; --debug shows the traceback
        from leeward.common.errors import FleetError

        if isinstance(exc, FleetError):
            fail(exc, exc.message, 1)
        fail(
            exc, f"Unexpected {type(exc).__name__}: {exc}; run again with --debug and report it", 1
        )


if __name__ == "__main__":
    main()
