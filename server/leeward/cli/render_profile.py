"""How the CLI shows a profile and its history to a person."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leeward.cli.render import when
from leeward_protocol.profile import Profile, ProfileHistory


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def profile(console: Console, p: Profile) -> None:
    if p.version == 0:
        console.print(
            f"{p.user}'s profile is empty: edit a tracked file (~/.bashrc, ~/.gitconfig, "
            "~/.config/...) in an environment, or write ~/.config/leeward/config.toml here."
        )
        return
    total = sum(f.size for f in p.files)
    console.print(
        f"[bold]{p.user}[/]'s profile, version {p.version} ({when(p.created_at)}): "
        f"{len(p.files)} files, {_size(total)} "
        f"[dim](limits: {p.limits.max_files} files, {_size(p.limits.max_total_bytes)}, "
        f"{_size(p.limits.max_file_bytes)} per file)[/]"
    )
    if p.config is not None:
        c = p.config
        parts = [
            f"region {c.default_region}" if c.default_region else "",
            f"flavor {c.default_flavor}" if c.default_flavor else "",
            f"features {', '.join(c.features)}" if c.features else "",
            f"{len(c.one_offs)} one-off(s)" if c.one_offs else "",
            "dotfiles" if c.dotfiles else "",
            f"tracks also {', '.join(c.tracked_paths)}" if c.tracked_paths else "",
        ]
        console.print("config.toml: " + escape("; ".join(x for x in parts if x) or "defaults"))
    if not p.files:
        return
    table = Table(box=None, header_style="bold")
    for column in ("PATH", "SIZE", "MODE", "VERSION", "FROM", "MODIFIED"):
        table.add_column(column)
    for f in p.files:
        table.add_row(
            escape(f.path),
            _size(f.size),
            oct(f.mode)[2:],
            str(f.version),
            escape(f.source),
            when(f.modified_at),
        )
    console.print(table)
    console.print(
        "\n[dim]`leeward profile show PATH` prints a file; `--version N` an older one.[/]"
    )


def history(console: Console, h: ProfileHistory, path: str | None) -> None:
    if not h.versions:
        about = f" that changed {path}" if path else ""
        console.print(f"No kept versions{escape(about)}.")
        return
    table = Table(box=None, header_style="bold")
    for column in ("VERSION", "WHEN", "FROM", "WHAT"):
        table.add_column(column)
    for v in h.versions:
        table.add_row(str(v.version), when(v.created_at), escape(v.source), escape(v.summary))
    console.print(table)
    console.print(
        "\n[dim]`leeward profile restore N [PATH...]` brings a version back; "
        "`leeward profile show PATH --version N` prints a file as it was.[/]"
    )
