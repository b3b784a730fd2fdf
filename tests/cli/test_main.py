"""The command tree of cli/main.py: every command at its name and place, and `leeward --help`
without the heavy modules. (That nothing below the CLI imports it is import-linter's layers
contract, in scripts/test.)"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import typer.main

from leeward.cli.main import app

COMMANDS = [
    "version",
    "login",
    "whoami",
    "catalog",
    "list",
    "show",
    "delete",
    "extend",
    "start",
    "move",
    "config-ssh",
    "ssh",
    "locate",
    "up",
    "down",
    "proxy",
    "agent",
    "daemon",
    "status",
    "create",
    "create.devserver",
    "create.container",
    "fleet",
    "fleet.serve",
    "fleet.token",
    "fleet.token.create",
    "admin",
    "admin.announce",
    "admin.announcements",
    "admin.sinks",
    "admin.host",
    "admin.host.list",
    "admin.host.drain",
    "admin.host.activate",
    "admin.host.token",
    "admin.host.show",
    "admin.host.decommission",
    "admin.region",
    "admin.region.cut",
    "admin.region.restore",
    "admin.env",
    "admin.env.migrate",
    "admin.dns",
    "admin.dns.status",
    "admin.dns.stop",
    "admin.dns.start",
    "admin.sink",
    "admin.sink.pause",
    "admin.sink.resume",
    "admin.announcement",
    "admin.announcement.edit",
    "admin.announcement.withdraw",
    "host",
    "host.serve",
    "profile",
    "profile.show",
    "profile.history",
    "profile.restore",
    "features",
    "features.list",
    "backup",
    "backup.now",
    "backup.list",
    "backup.show",
    "backup.restore",
    "backup.schedule",
    "image",
    "image.build",
    "image.list",
    "announcements",
    "announcements.dismiss",
    "notifications",
    "notifications.prefs",
]


def command_paths(group: Any, prefix: str = "") -> list[str]:
    """Every command and group under `group`, in the order their `--help` lists them."""
    paths = []
    for name in group.list_commands(None):
        paths.append(prefix + name)
        if hasattr(group.commands[name], "list_commands"):
            paths += command_paths(group.commands[name], f"{prefix}{name}.")
    return paths


def test_every_command_at_its_name_and_place() -> None:
    assert command_paths(typer.main.get_command(app)) == COMMANDS


def test_help_starts_without_the_heavy_modules() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['leeward', '--help']\n"
        "from leeward.cli.entry import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stderr.split())
    assert "leeward.cli.main" in loaded and "Usage: leeward" in result.stdout
    heavy = {"aiohttp", "asyncssh", "pydantic", "sqlalchemy", "leeward_protocol"}
    assert not heavy & loaded
    below = {m for m in loaded if m.startswith("leeward.") and not m.startswith("leeward.cli")}
    assert not below, "the commands import these inside, when they run"
