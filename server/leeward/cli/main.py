"""`leeward`: the command line. Everything the VS Code extension can do, from a terminal.

The whole command tree is here: the typer apps, and every command added by name from the module
that holds it, in the order `leeward --help` lists them. Heavy modules (aiohttp, asyncssh, the
fleet) are imported inside the commands that need them, so `leeward --help` and `leeward ssh`
start fast: a command module imports only typer and the CLI's light helpers at its top.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from leeward.cli import (
    admin,
    announcements,
    backup,
    catalog,
    connect,
    embedded_commands,
    environments,
    host,
    identity,
    image,
    notifications,
    operators,
    processes,
    profile,
)
from leeward.cli.errors import CliError, fail, show_tracebacks

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
    help="Operate the fleet (admins): hosts, environments, DNS, announcements.",
    no_args_is_help=True,
)
host_agent_app = typer.Typer(
    help="This machine's host agent, for the platform team: `leeward host serve`.",
    no_args_is_help=True,
)
region_app = typer.Typer(
    help="Regions' network: cut a region's links for an exercise, restore them.",
    no_args_is_help=True,
)
host_app = typer.Typer(
    help="Hosts: drain one for maintenance, put it back, decommission it, issue its agent a token.",
    no_args_is_help=True,
)
env_admin_app = typer.Typer(help="Any user's environments: migrate.", no_args_is_help=True)
dns_app = typer.Typer(
    help="The zone's DNS server: stop and start it for exercises.", no_args_is_help=True
)
profile_app = typer.Typer(
    help="Your profile: the files and config.toml every new environment starts with.",
    no_args_is_help=True,
)
features_app = typer.Typer(
    help="Features from the fleet's catalog, to name in config.toml.", no_args_is_help=True
)
app.add_typer(create_app, name="create")
app.add_typer(fleet_app, name="fleet")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(host_app, name="host")
app.add_typer(host_agent_app, name="host")
admin_app.add_typer(region_app, name="region")
admin_app.add_typer(env_admin_app, name="env")
admin_app.add_typer(dns_app, name="dns")
fleet_app.add_typer(token_app, name="token")
app.add_typer(profile_app, name="profile")
image_app = typer.Typer(
    help="The Debian images environments run on, in this machine's cache (operators).",
    no_args_is_help=True,
)
backup_app = typer.Typer(
    help="Your devservers' backups: take one now, list, look inside, restore, schedule.",
    no_args_is_help=True,
)
announcements_app = typer.Typer(
    help="Announcements that concern you (alone: list them); dismiss one."
)
announcement_app = typer.Typer(
    help="Change or withdraw an announcement (admins).", no_args_is_help=True
)
app.add_typer(features_app, name="features")
app.add_typer(backup_app, name="backup")
app.add_typer(image_app, name="image")
app.add_typer(announcements_app, name="announcements")
notifications_app = typer.Typer(
    help="Your notifications (alone: list them, with where each went); your preferences."
)
sink_app = typer.Typer(
    help="Notification sinks: pause one (its deliveries wait), resume it (admins).",
    no_args_is_help=True,
)
app.add_typer(notifications_app, name="notifications")
admin_app.add_typer(sink_app, name="sink")
admin_app.add_typer(announcement_app, name="announcement")


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks.", envvar="LEEWARD_DEBUG")
    ] = False,
) -> None:
    if debug:
        show_tracebacks()


# `leeward --help` lists them in this order.
app.command("version")(identity.version)
app.command("login")(identity.login)
app.command("whoami")(identity.whoami)
app.command("catalog")(catalog.catalog)
app.command("list")(environments.list_environments)
app.command("show")(environments.show)
app.command("delete")(environments.delete)
app.command("extend")(environments.extend)
app.command("start")(environments.start)
app.command("move")(backup.move)
app.command("config-ssh")(connect.config_ssh)
# After ENV, the remote command's words are its own, not options of `leeward ssh`.
app.command("ssh", context_settings={"allow_interspersed_args": False})(connect.ssh)
app.command("locate")(connect.locate)
app.command("up")(embedded_commands.up)
app.command("down")(embedded_commands.down)
# The proxy and the agent parse their own arguments, --help included.
app.command(
    "proxy",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(processes.proxy)
app.command(
    "agent",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(processes.agent)
app.command("daemon")(processes.daemon)
app.command("status")(connect.status)

create_app.command("devserver")(environments.create_devserver)
create_app.command("container")(environments.create_container)

fleet_app.command("serve")(operators.fleet_serve)
host_agent_app.command("serve")(host.host_serve)
token_app.command("create")(operators.token_create)

host_app.command("list")(admin.host_list)
host_app.command("drain")(admin.host_drain)
host_app.command("activate")(admin.host_activate)
host_app.command("token")(admin.host_token)
host_app.command("show")(backup.host_show)
host_app.command("decommission")(backup.host_decommission)
backup_app.command("now")(backup.backup_now)
backup_app.command("list")(backup.backup_list)
backup_app.command("show")(backup.backup_show)
backup_app.command("restore")(backup.backup_restore)
backup_app.command("schedule")(backup.backup_schedule)
region_app.command("cut")(admin.region_cut)
region_app.command("restore")(admin.region_restore)
env_admin_app.command("migrate")(admin.env_migrate)
dns_app.command("status")(admin.dns_status)
dns_app.command("stop")(admin.dns_stop)
dns_app.command("start")(admin.dns_start)

profile_app.command("show")(profile.show)
profile_app.command("history")(profile.history)
profile_app.command("restore")(profile.restore)

features_app.command("list")(catalog.features_list)

announcements_app.callback(invoke_without_command=True)(announcements.mine)
announcements_app.command("dismiss")(announcements.dismiss)
admin_app.command("announce")(announcements.announce)
admin_app.command("announcements")(announcements.admin_list)
announcement_app.command("edit")(announcements.edit)
announcement_app.command("withdraw")(announcements.withdraw)

notifications_app.callback(invoke_without_command=True)(notifications.mine)
notifications_app.command("prefs")(notifications.prefs)
admin_app.command("sinks")(notifications.sinks)
sink_app.command("pause")(notifications.pause)
sink_app.command("resume")(notifications.resume)

image_app.command("build")(image.image_build)
image_app.command("list")(image.image_list)


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
