"""Announcements and notifications through the real daemon (over stdio) from a real fleet: a
region's announcement scheduled ahead reaches the client at its start, dismissed it is flagged
(and stays so), its text changed it is shown again; an expiry warning (the fleet's own warning
loop, for a devserver that expires within the lead time) reaches the client with its Extend
action, again in a new daemon until the client says it showed it, then never again; bad params
are refused with a sentence while the daemon goes on.

The watcher alone against a stand-in inbox (backoff, deadlines, garbage): test_inbox.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pygls.exceptions import JsonRpcException

from leeward.client.credentials import Credentials, store_credentials
from tests.cli.sandbox import make_sandbox
from tests.daemon.kit import DaemonClient, running_daemon

INVALID_PARAMS = -32602
FLEET_ERROR = -32001

HOSTILE = "Drain of **north** <script>alert('x')</script> <b>tonight</b>"


async def signed_in(d: DaemonClient) -> None:
    await d.until(
        lambda: any(s["fleet"] == "connected" for s in d.statuses),
        what="the daemon never reached the fleet",
    )


def latest(d: DaemonClient, announcement_id: int) -> dict[str, Any] | None:
    for listing in reversed(d.announcements):
        for a in listing["announcements"]:
            if a["id"] == announcement_id:
                return dict(a)
    return None


def expiry_warnings(d: DaemonClient) -> list[dict[str, Any]]:
    return [n for n in d.notifications if n["kind"] == "expiry" and n["environment"] == "keep"]


async def test_announcements_and_notifications_reach_the_client(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
) -> None:
    config = config_factory(sqlite_url)
    config.notify.expiry_warning_hours = [2.0]
    config.notify.check_seconds = 0.5
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    async with start_fleet(config) as f:
        store_credentials(sandbox.paths.credentials, Credentials(fleet=f.url, token=f.api.token))
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "keep", "region": "north", "hours": 1},
        )
        assert status == 202, env
        starts = datetime.now(UTC) + timedelta(seconds=2)
        status, posted = await f.admin.call(
            "POST",
            "/v1/admin/announcements",
            {
                "text": HOSTILE,
                "severity": "warning",
                "regions": ["north"],
                "startsAt": starts.isoformat(),
            },
        )
        assert status in (200, 201), posted
        ident = posted["id"]
        _, elsewhere = await f.admin.call(
            "POST", "/v1/admin/announcements", {"text": "South only", "regions": ["south"]}
        )

        async with running_daemon(sandbox, {"logLevel": "debug"}) as d:
            await signed_in(d)
            # -- the expiry warning, from the fleet's own loop, with its Extend action
            [warning] = await d.until(lambda: expiry_warnings(d), 30, "the expiry warning")
            assert [a["kind"] for a in warning["actions"]] == ["extend"], warning
            assert warning["actions"][0]["environment"] == "keep"

            # -- the announcement, at its start and not before; the south one never
            shown = await d.until(lambda: latest(d, ident), 30, "the announcement")
            arrived = datetime.now(UTC)
            assert arrived >= starts - timedelta(seconds=0.5), "shown before its start"
            assert arrived - starts < timedelta(seconds=5), f"{arrived - starts} after its start"
            assert shown["text"] == HOSTILE and shown["dismissed"] is False
            assert shown["environments"] == ["keep"]
            assert latest(d, elsewhere["id"]) is None
            listed = await d.request("leeward/announcements/list", {})
            assert [a["id"] for a in listed["announcements"]] == [ident]

            # -- dismissed: flagged now, and it stays so
            dismissed = await d.request(
                "leeward/announcements/dismiss", {"id": ident, "revision": shown["revision"]}
            )
            assert dismissed["dismissed"] is True
            assert latest(d, ident)["dismissed"] is True  # type: ignore[index]
            again = await d.request("leeward/announcements/list", {})
            assert again["announcements"][0]["dismissed"] is True

            # -- its text changed: shown again (a new revision, not dismissed)
            status, edited = await f.admin.call(
                "PATCH", f"/v1/admin/announcements/{ident}", {"text": "Drain moved to Friday"}
            )
            assert status == 200, edited
            back = await d.until(
                lambda: (a := latest(d, ident)) and a["revision"] > shown["revision"] and a,
                30,
                "the edited announcement",
            )
            assert back["dismissed"] is False and back["text"] == "Drain moved to Friday"

            # -- bad params: a sentence, and the daemon goes on
            for params in ({"id": "x", "revision": 1}, {"id": 1}, {"ids": []}):
                method = (
                    "leeward/notifications/seen"
                    if "ids" in params
                    else "leeward/announcements/dismiss"
                )
                error = await d.error_of(method, params)
                assert error.code == INVALID_PARAMS, error
            error = await d.error_of("leeward/announcements/dismiss", {"id": 999999, "revision": 1})
            assert isinstance(error, JsonRpcException) and error.code == FLEET_ERROR
            assert (await d.request("leeward/status/get", {}))["fleet"] == "connected"
            # not told seen: the window closes without having shown it

        # -- a new daemon: the unseen warning again; told seen, never again
        async with running_daemon(sandbox, {"logLevel": "debug"}) as d:
            [missed] = await d.until(lambda: expiry_warnings(d), 30, "the missed warning")
            assert missed["id"] == warning["id"]
            seen = await d.request("leeward/notifications/seen", {"ids": [missed["id"]]})
            assert seen == {"ids": [missed["id"]], "told": True}
            mine = await d.request("leeward/notifications/list", {})
            ours = [n for n in mine["notifications"] if n["id"] == missed["id"]]
            assert ours and ours[0]["seenAt"] is not None, mine
        async with running_daemon(sandbox, {"logLevel": "debug"}) as d:
            await d.until(lambda: d.announcements, 30, "the first inbox answer")
            assert expiry_warnings(d) == [], "a seen notification is not shown again"
            # the edited announcement is still there, and still not dismissed
            assert latest(d, ident)["dismissed"] is False  # type: ignore[index]
