"""Announcements from the command line: the operators' `leeward admin announce`, `leeward admin
announcements` and `leeward admin announcement edit|withdraw ID`; a user's `leeward
announcements` and `leeward announcements dismiss ID` (the banner and the lines under `leeward
list` are leeward.cli.banner's)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import JsonOption

if TYPE_CHECKING:
    from pydantic import BaseModel

    from leeward.client.api import FleetClient
    from leeward_protocol.notify import Announcement

M = TypeVar("M", bound="BaseModel")

IdArgument = Annotated[int, typer.Argument(help="The announcement's id.", metavar="ID")]
SeverityOption = Annotated[
    str | None, typer.Option("--severity", help="info, warning or critical.")
]
TimeHelp = "ISO 8601 (2026-12-24T18:00Z), or from now: +30s, +10m, +2h, +1d."

_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC if it has no offset), or one relative to now (`+2s`, `+1h`)."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now + timedelta(seconds=float(relative[1]) * _UNITS[relative[2]])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text!r} is not a time: give {TimeHelp}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _links(links: list[str], move: bool) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    for link in links:
        label, sep, url = link.partition("=")
        if not sep or not label.strip() or not url.strip():
            raise CliError(f"--link {link!r}: give LABEL=URL, e.g. --link Status=https://...")
        actions.append({"kind": "link", "label": label.strip(), "url": url.strip()})
    if move:
        actions.append({"kind": "move", "label": "Move my devserver"})
    return actions


def announce(
    text: Annotated[str, typer.Argument(help="The text (Markdown).")],
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Only environments in this region.")
    ] = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Only environments on this host.")
    ] = None,
    flavor: Annotated[
        list[str] | None, typer.Option("--flavor", help="Only devservers of this flavor.")
    ] = None,
    profile: Annotated[
        list[str] | None, typer.Option("--profile", help="Only containers of this profile.")
    ] = None,
    user: Annotated[list[str] | None, typer.Option("--user", help="Only this user.")] = None,
    severity: SeverityOption = None,
    start: Annotated[
        str | None, typer.Option("--start", help=f"When it shows; now if absent. {TimeHelp}")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help=f"When it goes; when withdrawn if absent. {TimeHelp}"),
    ] = None,
    link: Annotated[
        list[str] | None, typer.Option("--link", help="A link button: LABEL=URL.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="A Leeward action button: move.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Post an announcement (admins): to everyone, or those whose environments are in a region,
    on a host, of a flavor or profile, or named users (every option given must match)."""
    from leeward_protocol.notify import PostAnnouncement

    if action not in (None, "move"):
        raise CliError(f"--action {action!r}: the one Leeward action here is `move`.")
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "text": text,
        "regions": region or [],
        "hosts": host or [],
        "flavors": flavor or [],
        "profiles": profile or [],
        "users": user or [],
        "starts_at": parse_time(start, "--start", now) if start else None,
        "ends_at": parse_time(end, "--end", now) if end else None,
        "actions": _links(link or [], action == "move"),
    }
    if severity is not None:
        fields["severity"] = severity
    request = _request(PostAnnouncement, fields)
    made = session.with_fleet(lambda fleet: fleet.post_announcement(request), banner=False)
    if json_:
        console.print_json(made)
        return
    from leeward.cli import render_announcements

    console.out().print(f"Posted announcement {made.id}.")
    render_announcements.listing(console.out(), [made], admin=True)


def admin_list(
    active: Annotated[
        bool, typer.Option("--active", help="Only those shown now.", show_default=False)
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Every announcement, newest first (admins)."""
    found = session.with_fleet(
        lambda fleet: fleet.all_announcements(True if active else None), banner=False
    )
    if json_:
        console.print_json(found)
        return
    from leeward.cli import render_announcements

    render_announcements.listing(console.out(), found.announcements, admin=True)


def edit(
    announcement: IdArgument,
    text: Annotated[str | None, typer.Option("--text", help="New text (Markdown).")] = None,
    severity: SeverityOption = None,
    end: Annotated[str | None, typer.Option("--end", help=f"A new end. {TimeHelp}")] = None,
    json_: JsonOption = False,
) -> None:
    """Change an announcement (admins): new text or severity shows it again to those who
    dismissed it."""
    from leeward_protocol.notify import EditAnnouncement

    fields: dict[str, Any] = {"text": text, "severity": severity}
    if end is not None:
        fields["ends_at"] = parse_time(end, "--end")
    if all(v is None for v in fields.values()):
        raise CliError("Nothing to change: give --text, --severity or --end.")
    request = _request(EditAnnouncement, {k: v for k, v in fields.items() if v is not None})
    done = session.with_fleet(
        lambda fleet: fleet.edit_announcement(announcement, request), banner=False
    )
    _done(done, json_, "Changed")


def withdraw(announcement: IdArgument, json_: JsonOption = False) -> None:
    """Withdraw an announcement now (admins)."""
    done = session.with_fleet(lambda fleet: fleet.withdraw_announcement(announcement), banner=False)
    _done(done, json_, "Withdrew")


def _request(model: type[M], fields: dict[str, Any]) -> M:
    """The request, or the CLI's sentence naming the option that is wrong."""
    from pydantic import ValidationError

    from leeward.common.validation import first_fault

    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        fault = first_fault(exc)
        raise CliError(
            fault.sentence() if fault.field is None else f"--{fault.sentence()}"
        ) from None


def _done(done: Announcement, json_: bool, verb: str) -> None:
    if json_:
        console.print_json(done)
        return
    from leeward.cli import render_announcements

    console.out().print(f"{verb} announcement {done.id} (revision {done.revision}).")
    render_announcements.listing(console.out(), [done], admin=True)


def mine(ctx: typer.Context, json_: JsonOption = False) -> None:
    """The announcements shown now that concern you (through your environments or by name)."""
    if ctx.invoked_subcommand is not None:
        return
    found = session.with_fleet(lambda fleet: fleet.announcements(), banner=False)
    if json_:
        console.print_json(found)
        return
    from leeward.cli import render_announcements

    render_announcements.listing(console.out(), found.announcements, admin=False)


def dismiss(announcement: IdArgument, json_: JsonOption = False) -> None:
    """Dismiss an announcement: it stays out of `leeward list` and the editor until its
    content changes."""

    async def go(fleet: FleetClient) -> Announcement:
        found = {a.id: a for a in (await fleet.announcements()).announcements}
        if announcement not in found:
            raise CliError(
                f"No announcement {announcement} concerns you now: `leeward announcements` "
                "lists those that do."
            )
        return await fleet.dismiss_announcement(announcement, found[announcement].revision)

    done = session.with_fleet(go, banner=False)
    if json_:
        console.print_json(done)
        return
    console.out().print(f"Dismissed announcement {done.id} (until its content changes).")
