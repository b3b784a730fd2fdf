"""How backups, moves and a host's decommission look in a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from leeward.cli.render import backup_status, when
from leeward_protocol.backup import Backup, BackupDetail, BackupList, HostDetail


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def listing(console: Console, backups: BackupList) -> None:
    console.print(f"[bold]{backups.environment}[/]: {backup_status(backups.status)}")
    if not backups.backups:
        console.print(f"No backups yet: `leeward backup now {backups.environment}` makes one.")
        return
    table = Table(box=None)
    for column in ("id", "taken", "state", "why", "snapshot", "files", "size", "added"):
        table.add_column(column)
    for b in backups.backups:
        table.add_row(
            str(b.id),
            when(b.started_at),
            b.state.value if b.state.value != "running" else f"running {b.progress:.0%}",
            b.trigger.value,
            b.snapshot or "",
            str(b.total_files) if b.total_files else "",
            size(b.total_bytes) if b.total_bytes else "",
            size(b.data_added) if b.snapshot else "",
        )
    console.print(table)


def finished(console: Console, b: Backup) -> None:
    if b.state.value == "running":
        console.print(f"Backup {b.id} of {b.environment} is running ({b.progress:.0%}).")
        return
    if b.state.value == "failed":
        console.print(f"Backup {b.id} of {b.environment} [red]failed[/]: {b.message}")
        return
    console.print(
        f"Backup {b.id} of {b.environment}: snapshot {b.snapshot}, {b.total_files} files, "
        f"{size(b.total_bytes)}; {size(b.data_added)} new ({b.files_new} new, "
        f"{b.files_changed} changed files) in {b.seconds:.1f} s."
    )
    for warning in b.warnings:
        console.print(f"  [yellow]not backed up:[/] {warning}")


def detail(console: Console, d: BackupDetail) -> None:
    finished(console, d.backup)
    table = Table(box=None, title=f"~/{d.path}" if d.path else "~")
    for column in ("type", "mode", "size", "modified", "path"):
        table.add_column(column)
    for e in d.entries:
        name = e.path + (f" -> {e.target}" if e.target else "")
        table.add_row(e.type, oct(e.mode & 0o7777), size(e.size), when(e.modified_at), name)
    console.print(table)


def host(console: Console, d: HostDetail) -> None:
    h = d.host
    line = f"[bold]{h.name}[/] ({h.region}): {h.state.value}"
    if d.decommission_by is not None:
        line += f", to be empty by {when(d.decommission_by)}"
    console.print(line)
    for env in d.environments:
        console.print(
            f"  {env.kind.value} {env.name} ({env.owner}): {env.state.value} — {env.status_message}"
        )
    for m in d.moves:
        console.print(
            f"  move {m.id} of {m.environment}: {m.state.value}, {m.stage.value} — {m.message}"
        )
