"""`leeward notifications`, `leeward notifications prefs` and `leeward admin sinks|sink
pause|resume` against a real fleet, as a user and as an admin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from leeward.fleet.config_notify import SmtpConfig
from leeward.fleet.notify import delivery
from leeward.fleet.notify.outbox import notify
from leeward_protocol.notify import NotificationKind
from tests.cli.sandbox import make_sandbox
from tests.conftest import free_port, small_config


async def test_notifications_and_sinks_from_the_command_line(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "admin").mkdir()
    user = make_sandbox(tmp_path / "alice")
    admin = make_sandbox(tmp_path / "admin")
    config = small_config(tmp_path, sqlite_url, regions=1)
    # Nothing listens on this port: the email sink is configured, and its sends fail.
    config.notify.email = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    async with start_fleet(config, background=False) as f:

        async def leeward(*args: str, who=user, ok: bool = True) -> tuple[int, str, str]:
            done = await asyncio.to_thread(who.run, *args, timeout=120)
            if ok:
                assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.returncode, done.stdout, done.stderr

        await leeward("login", "--fleet", f.url, "--token", f.api.token)
        await leeward("login", "--fleet", f.url, "--token", f.admin.token, who=admin)

        _, out, _ = await leeward("notifications")
        assert "No notifications." in out, out
        _, out, _ = await leeward("notifications", "prefs")
        assert "email (none)" in out and "fleet default" in out, out

        # Bad input: refused with a sentence, nothing changed.
        refusals = [
            (("--kind", "weather", "--sinks", "editor"), "'weather' is not a kind"),
            (("--kind", "expiry", "--sinks", "pager"), "'pager' is not a sink"),
            (("--kind", "expiry"), "--sinks"),
            (("--email", "not-an-address"), "is not an email address"),
            (("--kind", "expiry", "--sinks", "tracker"), "no tracker sink"),
            (("--kind", "expiry", "--sinks", "email"), "no email address"),
        ]
        for args, said in refusals:
            code, out, err = await leeward("notifications", "prefs", *args, ok=False)
            assert code != 0 and said in err, (args, out, err)
        _, out, _ = await leeward("notifications", "prefs", "--json")
        assert json.loads(out)["chosen"] == [] and json.loads(out)["email"] is None

        _, out, _ = await leeward(
            "notifications", "prefs", "--email", "alice@example.test",
            "--kind", "expiry", "--kind", "share", "--sinks", "editor,email",
        )  # fmt: skip
        assert "alice@example.test" in out, out
        prefs = json.loads((await leeward("notifications", "prefs", "--json"))[1])
        assert prefs["chosen"] == ["expiry", "share"]
        assert prefs["routes"]["expiry"] == ["editor", "email"]
        assert prefs["routes"]["storm"] == ["editor", "email", "chat"]  # the fleet's
        await leeward("notifications", "prefs", "--kind", "share", "--default")
        prefs = json.loads((await leeward("notifications", "prefs", "--json"))[1])
        assert prefs["chosen"] == ["expiry"] and prefs["email"] == "alice@example.test"

        # A notification, and where it went.
        async with f.fleet.store.write() as session:
            row = await notify(
                session,
                f.fleet.config,
                f.fleet.clock.now(),
                user="alice",
                kind=NotificationKind.BACKUP_FAILED,
                data={"environment": "box", "region": "north", "reason": "disk full"},
            )
            assert row is not None
        outcomes = await delivery.deliver_due(f.fleet)
        assert [(o.sink.value, o.state.value) for o in outcomes] == [("email", "pending")]
        _, out, _ = await leeward("notifications")
        assert "A backup of box failed" in out, out
        assert "editor pending" in out and "email pending (attempt 2" in out, out
        assert "SMTP server 127.0.0.1" in out and "Connect call failed" in out, out

        # Sinks: operators only.
        code, _, err = await leeward("admin", "sink", "pause", "email", ok=False)
        assert code != 0 and "admin" in err, err
        _, out, _ = await leeward(
            "admin", "sink", "pause", "email", "--reason", "SMTP maintenance", who=admin
        )
        assert "paused" in out and "SMTP maintenance" in out, out
        _, out, _ = await leeward("admin", "sinks", who=admin)
        lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
        assert "paused by root-admin" in lines["email"], out
        assert lines["tracker"].split()[1] == "no", out  # not configured
        code, _, err = await leeward("admin", "sink", "pause", "pager", who=admin, ok=False)
        assert code != 0 and "'pager' is not a sink" in err, err
        _, out, _ = await leeward("admin", "sink", "resume", "email", who=admin)
        assert "sending" in out, out
