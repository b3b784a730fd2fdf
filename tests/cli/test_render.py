"""How the CLI shows the fleet's resources to a person: relative times, `leeward show`'s setup
and profile sync sections, the features table."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from leeward.cli import render
from leeward.cli.render import when
from leeward_protocol.fleet import (
    Activity,
    Environment,
    EnvironmentKind,
    EnvironmentState,
    Hardware,
    Lifespan,
    Refusal,
    SetupItem,
    SetupKind,
    SetupState,
    SyncConflict,
    SyncStatus,
)
from leeward_protocol.profile import Feature

NOW = datetime.now(UTC)


def shown(draw) -> str:
    out = io.StringIO()
    draw(Console(file=out, width=200, no_color=True, highlight=False))
    return out.getvalue()


def environment(**changes: object) -> Environment:
    env = Environment(
        id="e-abc",
        name="box",
        fqdn="box.north.leeward.test",
        kind=EnvironmentKind.DEVSERVER,
        flavor="tiny",
        hardware=Hardware(cpus=1, memory_gib=2),
        region="north",
        state=EnvironmentState.RUNNING,
        lifespan=Lifespan.TEMPORARY,
        created_at=NOW,
        updated_at=NOW,
    )
    return env.model_copy(update=changes)


def test_when_is_relative() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert when(None) == "never"
    assert when(now + timedelta(days=2, hours=3, minutes=5), now=now) == "in 2d 3h"
    assert when(now + timedelta(minutes=45), now=now) == "in 45m"
    assert when(now - timedelta(hours=1), now=now) == "1h ago"
    assert when(now + timedelta(seconds=20), now=now) == "in <1m"


def test_setup_items_and_a_failed_ones_log_end():
    log = "".join(f"line {n}\n" for n in range(1, 31)) + "[not markup] the end\n"
    env = environment(
        setup=[
            SetupItem(
                kind=SetupKind.FEATURE,
                name="failing",
                state=SetupState.FAILED,
                detail="install script exited with status 3 after 0.4 s",
                log=log,
                log_path="/home/ada/.local/state/leeward/setup/feature-failing.log",
            ),
            SetupItem(
                kind=SetupKind.ONE_OFF,
                name="one-off 1",
                state=SetupState.INSTALLED,
                detail="command finished in 0.1 s",
                log="secret-free but not shown\n",
            ),
            SetupItem(kind=SetupKind.FEATURE, name="slow", state=SetupState.INSTALLING),
        ]
    )
    text = shown(lambda c: render.environment(c, env))
    assert "✗ failed     failing install script exited with status 3 after 0.4 s" in text
    assert "✓ installed  one-off 1 command finished in 0.1 s" in text
    assert "… installing slow" in text
    assert "│ [not markup] the end" in text, "log lines are not read as rich markup"
    assert "│ line 30" in text and "│ line 12" in text
    assert "│ line 11\n" not in text, "only the last 20 lines"
    assert "whole log: /home/ada/.local/state/leeward/setup/feature-failing.log" in text
    assert "not shown" not in text, "an installed step's log stays out of the way"
    assert "profile sync" not in text, "no sync yet: no section"


def test_sync_status_with_conflicts_and_refusals():
    env = environment(
        sync=SyncStatus(
            version=7,
            synced_at=datetime.now(UTC) - timedelta(minutes=5, seconds=30),
            conflicts=[
                SyncConflict(
                    path=".bashrc",
                    copy_path=".bashrc.leeward-conflict-7",
                    other_environment="web",
                    version=7,
                    at=NOW,
                )
            ],
            refused=[Refusal(path=".ssh/id_ed25519", code="secret", reason="A private key.")],
            error="the fleet answered 503",
        )
    )
    text = shown(lambda c: render.environment(c, env))
    assert "profile sync  version 7, 5m ago" in text
    assert "✗ the fleet answered 503" in text
    assert (
        "conflict .bashrc: kept this one; the version 7 from web is at .bashrc.leeward-conflict-7"
        in text
    )
    assert "refused  .ssh/id_ed25519: A private key." in text


def test_features_table():
    text = shown(
        lambda c: render.features(
            c,
            [
                Feature(
                    name="prompt",
                    description="A prompt.",
                    kinds=[EnvironmentKind.DEVSERVER, EnvironmentKind.CONTAINER],
                )
            ],
        )
    )
    assert text.splitlines()[0].split() == ["NAME", "KINDS", "DESCRIPTION"]
    assert text.splitlines()[1].split() == ["prompt", "devserver,", "container", "A", "prompt."]
    assert shown(lambda c: render.features(c, [])).strip() == "The fleet offers no features."


def test_show_says_what_keeps_it_up_and_when_it_stops_and_list_marks_stopped_ones():
    now = datetime.now(UTC)  # the render reads the clock: not the module's import time
    up = environment(
        activity=Activity(
            active_at=now - timedelta(minutes=2, seconds=5),
            kept_by="2 SSH sessions",
            stops_at=now + timedelta(minutes=57, seconds=55),
        )
    )
    text = " ".join(shown(lambda c: render.environment(c, up)).split())
    assert "kept up 2m ago by 2 SSH sessions" in text
    assert "idle stop in 57m" in text

    stopped = environment(
        state=EnvironmentState.STOPPED,
        activity=Activity(
            active_at=now - timedelta(hours=5),
            stopped_at=now - timedelta(hours=1, seconds=5),
            deletes_at=now + timedelta(days=13, hours=23),
        ),
    )
    text = " ".join(shown(lambda c: render.environment(c, stopped)).split())
    assert "stopped 1h ago, for being idle: ssh or `leeward start` starts it" in text
    assert "deleted in 13d 22h unless started (dormant)" in text
    assert "idle stop" not in text
    listed = shown(lambda c: render.environments(c, [up, stopped]))
    assert "stopped (idle)" in listed
