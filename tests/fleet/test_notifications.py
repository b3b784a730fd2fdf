"""Notifications end to end: a real fleet, a real SMTP server (aiosmtpd) and real webhook
receivers (aiohttp) on loopback. A notification reaches every sink; a sink that is down is
retried with backoff (a manual clock) and ends failed while the others are sent at once; a
paused sink's deliveries wait; preferences are one's own; the producers (a failed backup, a
decommission, a failed setup step) tell the owner once; and a fleet killed -9 between leasing
and sending sends it exactly once after a restart."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from leeward.common.clock import ManualClock
from leeward.fleet.config import dump_config, load_config
from leeward.fleet.config_notify import SmtpConfig
from leeward.fleet.notify import delivery
from leeward.fleet.notify.outbox import notify
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import DeliveryRow, EnvironmentRow, NotificationRow
from leeward_protocol.fleet import Role
from leeward_protocol.notify import NotificationKind, SinkName
from tests.conftest import Api, free_port, small_config, until

# ----------------------------------------------------------------------------- receivers


class Mailbox:
    """A real SMTP server on 127.0.0.1 (aiosmtpd); what it received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    @property
    def port(self) -> int:
        return int(self.controller.port)


class Webhooks:
    """Webhook receivers on 127.0.0.1: each POST answered (200) is recorded with its path,
    headers and JSON. `stall` paths take the request and never answer."""

    def __init__(self) -> None:
        self.answered: list[dict[str, Any]] = []
        self.arrived: list[dict[str, Any]] = []
        self.stall: set[str] = set()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        got = {
            "path": request.path,
            "headers": dict(request.headers),
            "json": json.loads(await request.read()),
        }
        self.arrived.append(got)
        if request.path in self.stall:
            await asyncio.Event().wait()  # until the test ends
        self.answered.append(got)
        return web.json_response({"ok": True})

    def to(self, path: str) -> list[dict[str, Any]]:
        return [got for got in self.answered if got["path"] == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def mailbox() -> Any:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture
async def webhooks() -> AsyncIterator[Webhooks]:
    hooks = Webhooks()
    await hooks.start()
    yield hooks
    await hooks.stop()


def with_sinks(config: Any, mailbox: Mailbox, webhooks: Webhooks, **notify: Any) -> Any:
    config.notify.email = SmtpConfig(host="127.0.0.1", port=mailbox.port, timeout_seconds=5)
    config.notify.chat = [f"json://127.0.0.1:{webhooks.port}/chat"]
    config.notify.tracker_url = f"http://127.0.0.1:{webhooks.port}/tracker"
    for name, value in notify.items():
        setattr(config.notify, name, value)
    return config


EVERY_SINK = ["editor", "email", "chat", "tracker"]


async def route_everything(api: Api, address: str = "alice@example.test") -> None:
    routes = {kind.value: EVERY_SINK for kind in NotificationKind}
    status, body = await api.call(
        "PUT", "/v1/me/notifications", {"email": address, "routes": routes}
    )
    assert status == 200, body


async def environment_named(store: Store, name: str) -> EnvironmentRow:
    async with store.read() as session:
        row = await session.scalar(select(EnvironmentRow).where(EnvironmentRow.live_name == name))
    assert row is not None
    return row


async def tell(
    fleet: Any, kind: NotificationKind, key: str | None = None, **kwargs: Any
) -> int | None:
    """A notification to alice, written in a store transaction as a producer does."""
    async with fleet.store.write() as session:
        row = await notify(
            session, fleet.config, fleet.clock.now(), user="alice", kind=kind, key=key, **kwargs
        )
        return None if row is None else row.id


def states(notification: dict[str, Any]) -> dict[str, str]:
    return {d["sink"]: d["state"] for d in notification["deliveries"]}


# ----------------------------------------------------------------------------- every sink


async def test_an_expiry_warning_reaches_email_chat_tracker_and_the_editor(
    start_fleet, config_factory, sqlite_url, mailbox, webhooks
):
    config = with_sinks(config_factory(sqlite_url), mailbox, webhooks, poll_seconds=0.1)
    async with start_fleet(config) as f:
        await route_everything(f.api)
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "box", "hours": 2},
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})
        box = await environment_named(f.fleet.store, "box")
        first = await tell(
            f.fleet, NotificationKind.EXPIRY, key=f"expiry:{box.id}:1", environment=box
        )
        assert first is not None
        # Once only: the same key again writes nothing.
        assert await tell(f.fleet, NotificationKind.EXPIRY, key=f"expiry:{box.id}:1") is None

        await until(lambda: len(mailbox.messages) == 1, "the email")
        await until(lambda: webhooks.to("/chat") and webhooks.to("/tracker"), "the webhooks")
        identity = f"{first}@{config.zone}"

        mail = mailbox.messages[0]
        assert mail["To"] == "alice@example.test"
        assert mail["Subject"] == "box expires in 2 hours", mail["Subject"]
        assert mail["Message-ID"] == f"<leeward-notification-{identity}>"
        text = mail.get_content()
        assert "leeward extend box --hours 24" in text, text
        assert "(north)" in text or "(south)" in text, text

        chat = webhooks.to("/chat")[0]
        assert chat["headers"]["Leeward-Notification-Id"] == identity
        assert chat["json"]["title"] == "box expires in 2 hours"
        assert "`leeward extend box --hours 24`" in chat["json"]["message"]

        tracker = webhooks.to("/tracker")[0]
        assert tracker["headers"]["Leeward-Notification-Id"] == identity
        assert tracker["json"]["environment"] == "box"
        assert tracker["json"]["user"] == "alice"
        assert tracker["json"]["kind"] == "expiry"
        assert "leeward extend box" in tracker["json"]["body"]

        # The editor: listed with its deliveries, unseen until it says it showed it.
        async def delivered() -> dict[str, Any] | None:
            _, listing = await f.api.call("GET", "/v1/notifications?unseen=true")
            shown = listing["notifications"]
            pushed = {k: v for k, v in states(shown[0]).items() if k != "editor"}
            return shown[0] if set(pushed.values()) == {"sent"} else None

        shown = await until(delivered, "every pushed delivery recorded sent")
        assert shown["id"] == first and shown["environment"] == "box"
        assert states(shown) == {
            "editor": "pending",
            "email": "sent",
            "chat": "sent",
            "tracker": "sent",
        }
        assert shown["actions"] == [
            {
                "kind": "extend",
                "label": "Extend by 24 hours",
                "url": None,
                "environment": "box",
                "command": "leeward extend box --hours 24",
            }
        ]
        _, inbox = await f.api.call("GET", "/v1/inbox")
        assert [n["id"] for n in inbox["notifications"]] == [first]

        # Someone else's ids are refused, and nothing changes.
        bob = await f.user("bob")
        status, body = await bob.call("POST", "/v1/notifications/seen", {"ids": [first]})
        assert status == 404, body
        assert (
            "no notification" in body["error"]["message"] and "your own" in body["error"]["message"]
        ), body
        status, body = await f.api.call("POST", "/v1/notifications/seen", {"ids": [first, 10**9]})
        assert status == 404, body
        _, listing = await f.api.call("GET", "/v1/notifications?unseen=true")
        assert [n["id"] for n in listing["notifications"]] == [first]

        status, body = await f.api.call("POST", "/v1/notifications/seen", {"ids": [first]})
        assert status == 200, body
        assert states(body["notifications"][0])["editor"] == "sent"
        assert body["notifications"][0]["seenAt"] is not None
        _, listing = await f.api.call("GET", "/v1/notifications?unseen=true")
        assert listing["notifications"] == []
        _, listing = await f.api.call("GET", "/v1/notifications")
        assert set(states(listing["notifications"][0]).values()) == {"sent"}
        # Nothing was sent twice.
        assert len(mailbox.messages) == 1
        assert len(webhooks.to("/chat")) == len(webhooks.to("/tracker")) == 1


async def test_a_slow_sink_does_not_hold_up_the_others(
    start_fleet, config_factory, sqlite_url, mailbox, webhooks
):
    """The tracker takes the request and never answers: email and chat are sent meanwhile, and
    the tracker's attempt ends with its timeout (half the lease) and is retried."""
    config = with_sinks(
        config_factory(sqlite_url), mailbox, webhooks, poll_seconds=0.1, lease_seconds=4
    )
    webhooks.stall.add("/tracker")
    async with start_fleet(config) as f:
        await route_everything(f.api)
        await tell(f.fleet, NotificationKind.SHARE, data={"by": "bob", "environment": "pet"})
        await until(lambda: any(a["path"] == "/tracker" for a in webhooks.arrived), "tracker")
        await until(lambda: len(mailbox.messages) == 1 and webhooks.to("/chat"), "the others")
        assert webhooks.to("/tracker") == []

        async def tracker_retried() -> dict[str, Any] | None:
            _, listing = await f.api.call("GET", "/v1/notifications")
            tracker = next(
                d for d in listing["notifications"][0]["deliveries"] if d["sink"] == "tracker"
            )
            return tracker if tracker["state"] == "pending" and tracker["reason"] else None

        tracker = await until(tracker_retried, "the tracker's attempt timed out", timeout=15)
        assert "did not answer within 2 s" in tracker["reason"], tracker
        assert tracker["attempts"] == 1


# ----------------------------------------------------------------------------- a sink down


async def test_a_sink_that_is_down_is_retried_with_backoff_then_fails(
    start_fleet, config_factory, sqlite_url, mailbox, webhooks
):
    clock = ManualClock(datetime.now(UTC))
    config = with_sinks(
        config_factory(sqlite_url),
        mailbox,
        webhooks,
        max_attempts=3,
        backoff_seconds=5,
        max_backoff_seconds=600,
    )
    refusing = free_port()  # nothing listens there: connection refused
    config.notify.tracker_url = f"http://127.0.0.1:{refusing}/tasks"
    async with start_fleet(config, clock=clock, background=False) as f:
        await route_everything(f.api)
        sent = await tell(f.fleet, NotificationKind.BACKUP_FAILED, data={"reason": "disk full"})
        assert sent is not None

        outcomes = await delivery.deliver_due(f.fleet)
        assert {o.sink.value: o.state.value for o in outcomes} == {
            "email": "sent",
            "chat": "sent",
            "tracker": "pending",
        }
        assert len(mailbox.messages) == 1 and len(webhooks.to("/chat")) == 1

        async def tracker() -> dict[str, Any]:
            _, listing = await f.api.call("GET", "/v1/notifications")
            return next(
                d for d in listing["notifications"][0]["deliveries"] if d["sink"] == "tracker"
            )

        waits = []
        for attempt in (1, 2):
            row = await tracker()
            assert row["state"] == "pending" and row["attempts"] == attempt, row
            assert "unreachable" in row["reason"] and f"127.0.0.1:{refusing}" in row["reason"]
            wait = (datetime.fromisoformat(row["nextAttemptAt"]) - clock.now()).total_seconds()
            waits.append(wait)
            # Exponential with equal jitter: in [d/2, d], d = 5 s, then 10 s.
            ceiling = 5 * 2 ** (attempt - 1)
            assert ceiling / 2 <= wait <= ceiling, (attempt, wait)
            # Not before its time.
            clock.advance(wait / 4)
            assert await delivery.deliver_due(f.fleet) == []
            clock.advance(wait)
            outcomes = await delivery.deliver_due(f.fleet)
            assert [o.sink.value for o in outcomes] == ["tracker"]

        row = await tracker()
        assert row["state"] == "failed" and row["attempts"] == 3, row
        assert row["reason"].startswith("Gave up after 3 attempts:"), row
        assert "unreachable" in row["reason"], row
        assert row["nextAttemptAt"] is None
        clock.advance(timedelta(hours=1))
        assert await delivery.deliver_due(f.fleet) == []

        _, sinks = await f.admin.call("GET", "/v1/admin/sinks")
        by_name = {s["name"]: s for s in sinks["sinks"]}
        assert by_name["tracker"]["failed"] == 1 and by_name["tracker"]["pending"] == 0
        assert by_name["email"]["failed"] == 0
        _, metrics = await f.api.call("GET", "/metrics")
        assert 'leeward_notification_deliveries{sink="tracker",state="failed"} 1.0' in metrics
        # Each sink was sent once.
        assert len(mailbox.messages) == 1 and len(webhooks.to("/chat")) == 1


# ----------------------------------------------------------------------------- pausing


async def test_a_paused_sink_holds_its_deliveries_until_resumed(
    start_fleet, config_factory, sqlite_url, mailbox, webhooks
):
    clock = ManualClock(datetime.now(UTC))
    config = with_sinks(config_factory(sqlite_url), mailbox, webhooks)
    async with start_fleet(config, clock=clock, background=False) as f:
        await route_everything(f.api)
        status, body = await f.api.call("POST", "/v1/admin/sinks/email", {"paused": True})
        assert status == 403, body
        status, body = await f.admin.call(
            "POST", "/v1/admin/sinks/email", {"paused": True, "reason": "SMTP maintenance"}
        )
        assert status == 200, body
        assert body["paused"] is True and body["pausedBy"] == "root-admin", body
        status, body = await f.admin.call("POST", "/v1/admin/sinks/pager", {"paused": True})
        assert status == 422, body

        await tell(f.fleet, NotificationKind.IDLE_STOP, data={"environment": "pet"})
        for _ in range(2):
            outcomes = await delivery.deliver_due(f.fleet)
            assert "email" not in {o.sink.value for o in outcomes}
            clock.advance(timedelta(minutes=10))
        assert mailbox.messages == []
        _, listing = await f.api.call("GET", "/v1/notifications")
        email_delivery = next(
            d for d in listing["notifications"][0]["deliveries"] if d["sink"] == "email"
        )
        assert email_delivery["state"] == "pending" and email_delivery["attempts"] == 0
        _, sinks = await f.admin.call("GET", "/v1/admin/sinks")
        paused = next(s for s in sinks["sinks"] if s["name"] == "email")
        assert (
            paused["paused"] and paused["pending"] == 1 and paused["reason"] == ("SMTP maintenance")
        )

        status, body = await f.admin.call("POST", "/v1/admin/sinks/email", {"paused": False})
        assert status == 200 and body["paused"] is False, body
        outcomes = await delivery.deliver_due(f.fleet)
        assert [(o.sink.value, o.state.value) for o in outcomes] == [("email", "sent")]
        assert len(mailbox.messages) == 1
        assert mailbox.messages[0]["Subject"] == "pet was stopped for being idle"


# ----------------------------------------------------------------------------- preferences


async def test_preferences_are_ones_own_and_bad_ones_are_refused(
    start_fleet, config_factory, sqlite_url, mailbox, webhooks
):
    config = with_sinks(config_factory(sqlite_url), mailbox, webhooks)
    config.notify.tracker_url = None  # this fleet has no tracker
    async with start_fleet(config, background=False) as f:
        bob = await f.user("bob")
        _, before = await bob.call("GET", "/v1/me/notifications")
        assert before["user"] == "bob" and before["email"] is None
        assert before["routes"]["expiry"] == ["editor", "email", "chat"]

        # alice setting bob's: refused, nothing stored.
        wanted = {"email": "alice@example.test", "routes": {"expiry": ["chat"]}}
        status, body = await f.api.call("PUT", "/v1/admin/users/bob/notifications", wanted)
        assert status == 403 and "admin" in body["error"]["message"], body
        _, after = await bob.call("GET", "/v1/me/notifications")
        assert after == before

        refused = [
            ({"routes": {"weather": ["editor"]}}, "routes.weather.[key]: Input should be 'expiry'"),
            ({"routes": {"expiry": ["pager"]}}, "routes.expiry.0: Input should be 'editor'"),
            ({"routes": {"expiry": "editor"}}, "routes.expiry"),
            ({"email": "not an address"}, "'not an address' is not an email address"),
            ({"routes": {"expiry": ["tracker"]}}, "no tracker sink"),
            ({"routes": {"expiry": ["email"]}}, "no email address"),
            ({"user": "bob"}, "user"),
        ]
        for body_sent, said in refused:
            status, body = await bob.call("PUT", "/v1/me/notifications", body_sent)
            assert status == 422, (body_sent, body)
            assert said in body["error"]["message"], (body_sent, body)
            _, after = await bob.call("GET", "/v1/me/notifications")
            assert after == before, body_sent

        # One's own, and an operator's for someone.
        status, body = await bob.call(
            "PUT",
            "/v1/me/notifications",
            {"email": "bob@example.test", "routes": {"expiry": ["editor", "email"]}},
        )
        assert status == 200, body
        assert body["email"] == "bob@example.test"
        assert body["routes"]["expiry"] == ["editor", "email"]
        assert body["routes"]["share"] == ["editor", "email", "chat"]  # the fleet's default
        status, body = await f.admin.call(
            "PUT", "/v1/admin/users/bob/notifications", {"routes": {"share": []}}
        )
        assert status == 200 and body["routes"]["share"] == [] and body["email"] is None, body
        status, body = await f.admin.call(
            "PUT", "/v1/admin/users/nobody/notifications", {"routes": {}}
        )
        assert status == 404 and "nobody" in body["error"]["message"], body

        # Routed as chosen: bob's share goes nowhere now; his expiry follows the fleet's
        # default again (the operator's PUT replaced his choice), less email: no address.
        async with f.fleet.store.write() as session:
            now = f.fleet.clock.now()
            shared = await notify(session, config, now, user="bob", kind=NotificationKind.SHARE)
            expiry = await notify(session, config, now, user="bob", kind=NotificationKind.EXPIRY)
            assert shared is not None and expiry is not None
            sinks = dict(
                (
                    await session.execute(
                        select(DeliveryRow.notification_id, func.count())
                        .where(DeliveryRow.notification_id.in_([shared.id, expiry.id]))
                        .group_by(DeliveryRow.notification_id)
                    )
                ).all()
            )
        assert sinks == {expiry.id: 2}  # editor and chat


# ----------------------------------------------------------------------------- producers


async def test_a_decommission_and_a_failed_setup_step_tell_the_owner_once(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url, regions=1, hosts=2)
    async with start_fleet(config, background=False) as f:
        # A one-off that fails, run by the real agent, which reports its setup as each step
        # changes (the failed step is in every later report): one notification.
        status, body = await f.api.call(
            "PUT",
            "/v1/profile/config",
            {"one_offs": [{"run": "echo trying; exit 3"}, {"run": "echo fine"}]},
        )
        assert status == 200, body
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "pet"}
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})

        async def setup_finished() -> list[dict[str, Any]] | None:
            _, shown = await f.api.call("GET", "/v1/environments/pet")
            items = shown["setup"]
            done = len(items) == 2 and all(i["state"] in ("installed", "failed") for i in items)
            return items if done else None

        items = await until(setup_finished, "both one-offs ran", timeout=60)
        assert [i["state"] for i in items] == ["failed", "installed"], items
        _, listing = await f.api.call("GET", "/v1/notifications")
        assert [n["kind"] for n in listing["notifications"]] == ["setup-failed"]
        setup = listing["notifications"][0]
        assert setup["title"] == "Setup of pet failed at one-off 1", setup
        assert "exited with status 3" in setup["body"], setup["body"]
        assert "`leeward show pet`" in setup["body"], setup["body"]
        pet = await environment_named(f.fleet.store, "pet")

        # Its host decommissioned, twice with the same deadline: one notification.
        by = (datetime.now(UTC) + timedelta(hours=6)).replace(microsecond=0)
        for _ in range(2):
            status, body = await f.admin.call(
                "POST",
                f"/v1/admin/hosts/{pet.host}/decommission",
                {"by": by.isoformat(), "reason": "disk swap"},
            )
            assert status == 202, body
        _, listing = await f.api.call("GET", "/v1/notifications")
        assert [n["kind"] for n in listing["notifications"]] == ["decommission", "setup-failed"]
        notice = listing["notifications"][0]
        when = by.strftime("%Y-%m-%d %H:%M UTC")
        assert notice["title"] == f"pet must move off host {pet.host} by {when}"
        assert "disk swap" in notice["body"] and "`leeward move pet`" in notice["body"]
        assert [a["command"] for a in notice["actions"]] == ["leeward move pet"]


@pytest.mark.slow
async def test_a_failing_backup_tells_its_owner_once_per_streak(
    start_fleet, config_factory, sqlite_url
):
    from leeward.fleet.store.models import BackupRepositoryRow

    config = config_factory(sqlite_url, regions=1)
    config.backup.check_seconds = 3600
    async with start_fleet(config, background=False) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "kept"}
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})

        async def back_up(expected: str) -> dict[str, Any]:
            status, body = await f.api.call("POST", "/v1/environments/kept/backups")
            assert status == 202, body

            async def finished() -> dict[str, Any] | None:
                _, listing = await f.api.call("GET", "/v1/environments/kept/backups")
                last = listing["backups"][0]
                return last if last["state"] != "running" else None

            last = await until(finished, "the backup", timeout=120)
            assert last["state"] == expected, last
            return last

        async def kinds() -> list[str]:
            _, listing = await f.api.call("GET", "/v1/notifications")
            return [n["kind"] for n in listing["notifications"]]

        await back_up("succeeded")
        assert await kinds() == []
        async with f.fleet.store.write() as session:
            repo = await session.scalar(select(BackupRepositoryRow))
            assert repo is not None
            key, repo.password = repo.password, "not-the-key-any-more"
        await back_up("failed")
        await back_up("failed")
        assert await kinds() == ["backup-failed"]  # one per streak
        _, listing = await f.api.call("GET", "/v1/notifications")
        told = listing["notifications"][0]
        assert told["title"] == "A backup of kept failed"
        assert "`leeward backup now kept`" in told["body"]
        async with f.fleet.store.write() as session:
            repo = await session.scalar(select(BackupRepositoryRow))
            assert repo is not None
            repo.password = key
        await back_up("succeeded")
        async with f.fleet.store.write() as session:
            repo = await session.scalar(select(BackupRepositoryRow))
            assert repo is not None
            repo.password = "wrong-again-and-long-enough"
        await back_up("failed")
        assert await kinds() == ["backup-failed", "backup-failed"]  # a new streak


# ----------------------------------------------------------------------------- kill -9


async def test_a_fleet_killed_between_leased_and_sent_sends_exactly_once(
    tmp_path: Path, http, webhooks
):
    from leeward.fleet.bootstrap import issue_token
    from tests.fleet.test_restart import FleetProcess

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    config = small_config(tmp_path, db_url, regions=1, hosts=1)
    config.listen_port = free_port()
    config.notify.poll_seconds = 0.1
    config.notify.lease_seconds = 6  # an attempt may take 3 s; the kill comes well before
    config.notify.tracker_url = f"http://127.0.0.1:{webhooks.port}/tracker"
    config.notify.routes = {kind: [SinkName.EDITOR, SinkName.TRACKER] for kind in NotificationKind}
    config_path = tmp_path / "fleet.toml"
    config_path.write_text(dump_config(config))
    url = f"http://127.0.0.1:{config.listen_port}"
    fleet = FleetProcess(config_path, tmp_path / "fleet.log")
    webhooks.stall.add("/tracker")
    store = Store(db_url)
    try:
        await fleet.start(url, http)
        await issue_token(load_config(config_path), "alice", Role.USER)
        async with store.write() as session:
            row = await notify(
                session,
                config,
                datetime.now(UTC),
                user="alice",
                kind=NotificationKind.STORM,
                data={"environment": "pet", "region": "north", "reason": "links cut"},
                key="storm:1",
            )
            assert row is not None
            notification_id = row.id

        async def tracker_delivery() -> DeliveryRow:
            async with store.read() as session:
                found = await session.scalar(
                    select(DeliveryRow).where(
                        DeliveryRow.notification_id == notification_id,
                        DeliveryRow.sink == "tracker",
                    )
                )
            assert found is not None
            return found

        # Sent and not answered: leased, not sent, when the fleet is killed.
        await until(lambda: len(webhooks.arrived) == 1, "the tracker's request")
        assert fleet.stop(signal.SIGKILL) == -signal.SIGKILL
        killed = await tracker_delivery()
        assert (killed.state, killed.attempts, killed.sent_at) == ("leased", 1, None)
        assert webhooks.answered == []

        # Restarted: once the lease has run out, leased again and sent, once.
        webhooks.stall.clear()
        await fleet.start(url, http)

        async def sent() -> DeliveryRow | None:
            found = await tracker_delivery()
            return found if found.state == "sent" else None

        done = await until(sent, "the delivery sent after the restart", timeout=30)
        assert done.attempts == 2 and done.reason == "", done
        assert len(webhooks.answered) == 1
        ids = {got["headers"]["Leeward-Notification-Id"] for got in webhooks.arrived}
        assert ids == {f"{notification_id}@{config.zone}"}  # the receiver can tell a repeat
        assert webhooks.answered[0]["json"]["kind"] == "storm"
        async with store.read() as session:
            assert await session.scalar(select(func.count()).select_from(NotificationRow)) == 1
    finally:
        if fleet.proc is not None and fleet.proc.poll() is None:
            fleet.stop(signal.SIGTERM)
        await store.close()
