"""How the CLI shows announcements: a table, one line each under `leeward list` and `show`, and
the one-line banner. An announcement's text is an operator's: printed through
`leeward.common.terminal.plain` (no escape sequences) and escaped for rich (no markup)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leeward.cli.render import when
from leeward.common.terminal import plain
from leeward_protocol.notify import Announcement, Severity

SEVERITY_STYLE = {Severity.INFO: "cyan", Severity.WARNING: "yellow", Severity.CRITICAL: "bold red"}
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def one_line(text: str, width: int = 100) -> str:
    """The first line of `text`, safe for a terminal and for rich, cut at `width`."""
    first = (plain(text).splitlines() or [""])[0].strip()
    if len(first) > width:
        first = first[: width - 1] + "…"
    return escape(first)


def severity(a: Announcement) -> str:
    return f"[{SEVERITY_STYLE[a.severity]}]{a.severity.value}[/]"


def listing(out: Console, found: Sequence[Announcement], *, admin: bool) -> None:
    if not found:
        out.print("No announcements." if admin else "No announcements concern you now.")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "SEVERITY", "TEXT", "SHOWN", "FOR" if admin else "YOUR ENVIRONMENTS"):
        table.add_column(column)
    for a in found:
        mark = " [dim](dismissed)[/]" if a.dismissed else ""
        table.add_row(
            str(a.id),
            severity(a),
            one_line(a.text, 70) + mark,
            _shown(a),
            _scope(a) if admin else escape(", ".join(a.environments)) or "you",
        )
    out.print(table)
    for a in found:
        for action in a.actions:
            how = action.command or action.url or ""
            out.print(f"  {a.id}: {escape(plain(action.label))}: {escape(plain(how))}")


def _shown(a: Announcement) -> str:
    if a.withdrawn_at is not None:
        return f"withdrawn {when(a.withdrawn_at)}"
    if not a.active and a.ends_at is not None and a.ends_at <= a.updated_at:
        return "ended"
    start = "now" if a.active else f"from {when(a.starts_at)}"
    return start + ("" if a.ends_at is None else f", until {when(a.ends_at)}")


def _scope(a: Announcement) -> str:
    s = a.scope
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("regions", s.regions),
            ("hosts", s.hosts),
            ("flavors", s.flavors),
            ("profiles", s.profiles),
            ("users", s.users),
        )
        if names
    ]
    return escape("; ".join(parts) or "everyone")


def under_environments(out: Console, found: Sequence[Announcement], shown: set[str]) -> None:
    """`leeward list` and `show`: one line for each undismissed announcement that concerns an
    environment shown (or the user as a whole, when it names no environment)."""
    for a in found:
        if a.dismissed:
            continue
        mine = [e for e in a.environments if e in shown]
        if a.environments and not mine:
            continue
        where = f" ({escape(', '.join(mine))})" if mine else ""
        out.print(f"{severity(a)} {one_line(a.text)}{where} [dim]· announcement {a.id}[/]")


def first_line(found: Sequence[Announcement]) -> str | None:
    """The banner: the most severe undismissed warning or critical one, and how many more."""
    loud = [
        a for a in found if not a.dismissed and a.severity in (Severity.WARNING, Severity.CRITICAL)
    ]
    if not loud:
        return None
    top = max(loud, key=lambda a: (_RANK[a.severity], a.id))
    more = f" (+{len(loud) - 1} more)" if len(loud) > 1 else ""
    return f"{severity(top)} {one_line(top.text, 80)}{more} [dim]· `leeward announcements`[/]"
