"""Notifications from the command line: a user's `leeward notifications` (each with where it
went) and `leeward notifications prefs`; the operators' `leeward admin sinks` and `leeward
admin sink pause|resume NAME`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from leeward.cli import console, session
from leeward.cli.errors import CliError
from leeward.cli.options import JsonOption

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward_protocol.notify import Preferences, SinkStatus

SinkArgument = Annotated[str, typer.Argument(help="editor, email, chat or tracker.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why, for the other operators.")]


def mine(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Your notifications, newest first, and where each went (sent, waiting, failed and why)."""
    if ctx.invoked_subcommand is not None:
        return
    found = session.with_fleet(lambda fleet: fleet.notifications(), banner=False)
    if json_:
        console.print_json(found)
        return
    from leeward.cli import render_notifications

    render_notifications.listing(console.out(), found.notifications)


def prefs(
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="A kind to route (repeat for several), e.g. expiry."),
    ] = None,
    sinks: Annotated[
        str | None,
        typer.Option(
            "--sinks", help="Where --kind goes: editor,email,chat,tracker ('' : nowhere)."
        ),
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="Your email address.")] = None,
    default: Annotated[
        bool, typer.Option("--default", help="The --kind follows the fleet's default again.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Show your notification preferences, or change them.

    `--kind expiry --sinks editor,email` sends expiry warnings to the editor and by email;
    `--email ADDRESS` sets your address; `--kind expiry --default` follows the fleet's default
    again."""
    from pydantic import ValidationError

    from leeward.common.validation import sentence
    from leeward_protocol.notify import NotificationKind, SetPreferences, SinkName

    kinds = kind or []
    if (sinks is not None or default) and not kinds:
        raise CliError("Say which kind: --kind KIND (e.g. --kind expiry) with --sinks.")
    if kinds and sinks is None and not default:
        raise CliError("Say where it goes: --sinks editor,email (or --default).")
    known = {k.value for k in NotificationKind}
    for name in kinds:
        if name not in known:
            raise CliError(
                f"--kind {name!r} is not a kind: give one of {', '.join(sorted(known))}."
            )
    chosen: list[str] = []
    if sinks:
        chosen = [s.strip() for s in sinks.split(",") if s.strip()]
        usable = {s.value for s in SinkName}
        for name in chosen:
            if name not in usable:
                raise CliError(
                    f"--sinks: {name!r} is not a sink: give some of {', '.join(sorted(usable))}."
                )

    async def run(fleet: FleetClient) -> Preferences:
        current = await fleet.notification_preferences()
        if not kinds and email is None:
            return current
        # The user's own choices stay theirs; the other kinds keep following the fleet's.
        routes = {k.value: [s.value for s in current.routes[k]] for k in current.chosen}
        for name in kinds:
            if default:
                routes.pop(name, None)
            else:
                routes[name] = chosen
        try:
            wanted = SetPreferences.model_validate(
                {"email": email if email is not None else current.email, "routes": routes}
            )
        except ValidationError as exc:
            raise CliError(sentence(exc)) from None
        return await fleet.set_notification_preferences(wanted)

    done = session.with_fleet(run)
    if json_:
        console.print_json(done)
        return
    from leeward.cli import render_notifications

    render_notifications.preferences(console.out(), done)


def sinks(json_: JsonOption = False) -> None:
    """Every sink: configured or not, paused or not, its deliveries waiting and failed."""
    found = session.with_fleet(lambda fleet: fleet.sinks())
    if json_:
        console.print_json(found)
        return
    from leeward.cli import render_notifications

    render_notifications.sinks(console.out(), found.sinks)


def pause(name: SinkArgument, reason: ReasonOption = "", json_: JsonOption = False) -> None:
    """Pause a sink: its deliveries wait (their attempts not counted) until it is resumed."""
    _set_paused(name, True, reason, json_)


def resume(name: SinkArgument, reason: ReasonOption = "", json_: JsonOption = False) -> None:
    """Resume a sink: what waited is sent."""
    _set_paused(name, False, reason, json_)


def _set_paused(name: str, paused: bool, reason: str, json_: bool) -> None:
    from pydantic import ValidationError

    from leeward.common.validation import sentence
    from leeward_protocol.notify import PauseSink, SinkName

    usable = sorted(s.value for s in SinkName)
    if name not in usable:
        raise CliError(f"{name!r} is not a sink: give one of {', '.join(usable)}.")
    try:
        request = PauseSink(paused=paused, reason=reason)
    except ValidationError as exc:
        raise CliError(sentence(exc)) from None

    async def run(fleet: FleetClient) -> SinkStatus:
        return await fleet.pause_sink(name, request)

    done = session.with_fleet(run)
    if json_:
        console.print_json(done)
        return
    from leeward.cli import render_notifications

    render_notifications.sinks(console.out(), [done])
