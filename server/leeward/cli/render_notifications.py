"""How notifications, preferences and sinks look in a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leeward.cli.render import when
from leeward_protocol.notify import (
    Delivery,
    Notification,
    NotificationKind,
    Preferences,
    SinkStatus,
)

_STATE_STYLE = {"sent": "green", "pending": "yellow", "leased": "yellow", "failed": "red"}


def _delivery(d: Delivery) -> str:
    state = d.state.value
    text = f"{d.sink.value} [{_STATE_STYLE.get(state, '')}]{state}[/]"
    if state == "pending" and d.attempts:
        text += f" (attempt {d.attempts + 1} {when(d.next_attempt_at)})"
    if d.reason:
        text += f": {escape(d.reason)}"
    return text


def listing(console: Console, notifications: list[Notification]) -> None:
    if not notifications:
        console.print("No notifications.")
        return
    for n in notifications:
        seen = "" if n.seen_at else " [bold]new[/]"
        console.print(f"[bold]#{n.id}[/] {when(n.created_at)} {n.kind.value}{seen}")
        console.print(f"  {escape(n.title)}")
        for action in n.actions:
            if action.command:
                console.print(f"  [cyan]{escape(action.command)}[/]")
            elif action.url:
                console.print(f"  {escape(action.label)}: {escape(action.url)}")
        for d in n.deliveries:
            console.print(f"  → {_delivery(d)}")


def preferences(console: Console, p: Preferences) -> None:
    console.print(f"[bold]{p.user}[/]: email {escape(p.email) if p.email else '(none)'}")
    table = Table(box=None)
    for column in ("kind", "sinks", "from"):
        table.add_column(column)
    chosen = set(p.chosen)
    for kind in NotificationKind:
        sinks = ", ".join(s.value for s in p.routes.get(kind, [])) or "(nowhere)"
        table.add_row(kind.value, sinks, "you" if kind in chosen else "fleet default")
    console.print(table)
    if not p.email:
        console.print(
            "Email goes nowhere without an address: `leeward notifications prefs --email ADDRESS`."
        )


def sinks(console: Console, statuses: list[SinkStatus]) -> None:
    table = Table(box=None)
    for column in ("sink", "configured", "state", "waiting", "failed", "why"):
        table.add_column(column)
    for s in statuses:
        state = f"[yellow]paused[/] by {s.paused_by}" if s.paused else "sending"
        table.add_row(
            s.name.value,
            "yes" if s.configured else "no",
            state,
            str(s.pending),
            str(s.failed),
            escape(s.reason),
        )
    console.print(table)
