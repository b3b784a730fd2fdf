"""How the CLI shows fleet resources to a person (tables on a rich Console)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leeward_protocol.fleet import (
    BackupStatus,
    Catalog,
    Environment,
    EnvironmentState,
    Hardware,
    SetupItem,
    SetupState,
    SyncStatus,
)
from leeward_protocol.profile import Feature

SETUP_MARK = {
    SetupState.PENDING: "[dim]·[/]",
    SetupState.INSTALLING: "[yellow]…[/]",
    SetupState.INSTALLED: "[green]✓[/]",
    SetupState.FAILED: "[red]✗[/]",
}

STATE_STYLE = {
    EnvironmentState.RUNNING: "green",
    EnvironmentState.PROVISIONING: "yellow",
    EnvironmentState.DELETING: "dim",
    EnvironmentState.DELETED: "dim",
    EnvironmentState.FAILED: "red",
    EnvironmentState.STOPPED: "cyan",
}


def when(moment: datetime | None, *, now: datetime | None = None) -> str:
    """`in 2d 3h`, `in 45m`, `5m ago`, or `never`."""
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = int((moment - now).total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        span = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        span = f"{hours}h {minutes}m" if minutes else f"{hours}h"
    else:
        span = f"{minutes}m" if minutes else "<1m"
    return f"in {span}" if future else f"{span} ago"


def hardware(hw: Hardware) -> str:
    text = f"{hw.cpus} vCPU, {hw.memory_gib} GiB"
    return text + (f", {hw.gpus} GPU" if hw.gpus else "")


def state(env: Environment) -> str:
    style = STATE_STYLE.get(env.state, "")
    said = env.state.value
    if env.state == EnvironmentState.STOPPED:
        said = "stopped (idle)"
    return f"[{style}]{said}[/]" if style else said


def activity(env: Environment) -> list[tuple[str, str]]:
    """`leeward show`'s lines on idle stop: what last kept it up and when it stops; once
    stopped, since when and when it is deleted for dormancy."""
    act = env.activity
    if act is None:
        return []
    rows: list[tuple[str, str]] = []
    if env.state == EnvironmentState.STOPPED:
        since = f"{when(act.stopped_at)}, " if act.stopped_at else ""
        rows.append(("stopped", f"{since}for being idle: ssh or `leeward start` starts it"))
        if act.deletes_at is not None:
            rows.append(("deleted", f"{when(act.deletes_at)} unless started (dormant)"))
        return rows
    if act.active_at is not None:
        by = f" by {escape(act.kept_by)}" if act.kept_by else ""
        rows.append(("kept up", f"{when(act.active_at)}{by}"))
    rows.append(("idle stop", when(act.stops_at) if act.stops_at else "never"))
    return rows


def environments(console: Console, envs: Sequence[Environment]) -> None:
    if not envs:
        console.print("No environments: create one with `leeward create devserver`.")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "SIZE", "REGION", "STATE", "EXPIRES"):
        table.add_column(column)
    for env in envs:
        table.add_row(
            env.name,
            env.kind.value,
            env.flavor or env.profile or "",
            env.region,
            state(env),
            when(env.expires_at),
        )
    console.print(table)


def environment(console: Console, env: Environment) -> None:
    rows: list[tuple[str, str]] = [
        ("name", env.name),
        ("id", env.id),
        ("fqdn", env.fqdn),
        ("kind", env.kind.value),
        ("flavor" if env.flavor else "profile", env.flavor or env.profile or ""),
        ("hardware", hardware(env.hardware)),
        ("region", env.region),
        ("host", env.host or ""),
        ("address", f"{env.address}:{env.ssh_port}" if env.address else ""),
        ("state", state(env)),
        ("status", env.status_message),
        ("lifespan", env.lifespan.value),
        ("expires", when(env.expires_at)),
        ("created", when(env.created_at)),
        ("last seen", when(env.last_seen_at) if env.last_seen_at else ""),
        *activity(env),
        ("moved to", env.moved_to or ""),
    ]
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        if value:
            table.add_row(key, value)
    console.print(table)
    if env.backup is not None:
        console.print(f"[bold]backups[/]  {backup_status(env.backup)}")
    if env.setup:
        setup(console, env.setup)
    if env.sync is not None:
        sync(console, env.sync)


def backup_status(status: BackupStatus) -> str:
    """`leeward show`'s line: when it was last backed up, and what is wrong if anything."""
    last = when(status.last_success_at) if status.last_success_at else "never"
    line = f"last {last}, every {status.interval_minutes} min"
    if status.running:
        line += "; one running now"
    if status.overdue:
        line += " [bold red]— overdue[/]"
    if status.message:
        line += f" (last failure: {status.message})"
    return line


def setup(console: Console, items: Sequence[SetupItem]) -> None:
    """Features, one-offs and dotfiles: a line each; a failed one with the end of its log."""
    console.print("\n[bold]setup[/]")
    for item in items:
        detail = f" [dim]{escape(item.detail)}[/]" if item.detail else ""
        console.print(
            f"  {SETUP_MARK.get(item.state, '?')} {item.state.value:<10} "
            f"{escape(item.name)}{detail}"
        )
        if item.state == SetupState.FAILED:
            for line in item.log.rstrip("\n").splitlines()[-LOG_LINES:]:
                console.print(f"      [dim]│[/] {escape(line)}", highlight=False)
            if item.log_path:
                console.print(f"      [dim]whole log: {escape(item.log_path)}[/]")


LOG_LINES = 20
"""How much of a failed step's log `leeward show` prints."""


def sync(console: Console, status: SyncStatus) -> None:
    """The environment's profile sync: its version, conflicts (and where the other copy went),
    files the profile refused."""
    at = f", {when(status.synced_at)}" if status.synced_at else ""
    console.print(f"\n[bold]profile sync[/]  version {status.version}{at}")
    if status.error:
        console.print(f"  [red]✗[/] {escape(status.error)}")
    for conflict in status.conflicts:
        other = f" from {conflict.other_environment}" if conflict.other_environment else ""
        console.print(
            f"  [yellow]conflict[/] {escape(conflict.path)}: kept this one; the version "
            f"{conflict.version}{escape(other)} is at {escape(conflict.copy_path)}"
        )
    for refusal in status.refused:
        console.print(f"  [red]refused[/]  {escape(refusal.path)}: {escape(refusal.reason)}")


def features(console: Console, items: Sequence[Feature]) -> None:
    if not items:
        console.print("The fleet offers no features.")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KINDS", "DESCRIPTION"):
        table.add_column(column)
    for feature in items:
        table.add_row(
            feature.name, ", ".join(k.value for k in feature.kinds), escape(feature.description)
        )
    console.print(table)
    console.print('\nName them in ~/.config/leeward/config.toml: features = ["NAME", ...]')


def catalog(console: Console, cat: Catalog) -> None:
    regions = Table(title="Regions", box=None, header_style="bold", title_justify="left")
    for column in ("NAME", "HOSTS", "FREE", "LARGEST FREE"):
        regions.add_column(column)
    for r in cat.regions:
        label = r.name if r.display_name in ("", r.name) else f"{r.name} ({r.display_name})"
        regions.add_row(
            label if r.accepting else f"{label} [red]not accepting[/]",
            str(r.hosts),
            hardware(r.free),
            hardware(r.largest_free),
        )
    flavors = Table(title="Devserver flavors", box=None, header_style="bold", title_justify="left")
    for column in ("NAME", "KIND", "HARDWARE", "DESCRIPTION"):
        flavors.add_column(column)
    for f in cat.flavors:
        flavors.add_row(f.name, f.kind.value, hardware(f.hardware), f.description)
    profiles = Table(
        title="Container profiles", box=None, header_style="bold", title_justify="left"
    )
    for column in ("NAME", "HARDWARE", "TOOLS", "WARM"):
        profiles.add_column(column)
    for p in cat.profiles:
        profiles.add_row(p.name, hardware(p.hardware), ", ".join(p.tools), str(p.warm_pool))
    console.print(regions, "", flavors, "", profiles)
    policy = cat.lifespans
    console.print(
        f"\nDevservers live {policy.devserver_default_hours} h by default (at most "
        f"{policy.devserver_max_hours} h, or permanent); containers {policy.container_hours} h "
        f"(at most {policy.container_max_hours} h). Zone: {cat.zone}."
    )


def ready(console: Console, env: Environment) -> None:
    console.print(
        f"[green]✓[/] {env.kind.value} [bold]{env.name}[/] is ready ({env.fqdn}, "
        f"expires {when(env.expires_at)}).\n"
        f"  Connect:  leeward ssh {env.name}\n"
        f"  Or:       leeward config-ssh, then `ssh {env.name}` or VS Code Remote-SSH"
    )
