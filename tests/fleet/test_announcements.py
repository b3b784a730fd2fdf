"""Announcements through the real fleet: posted by an operator (refused with a sentence and
nothing stored when wrong), shown from their start to their end to the users they concern (by
region, host, flavor, profile or name), dismissed per revision; at the SSH login of a real
environment (the real OpenSSH client in a PTY) as plain text, and never in `ssh ENV cmd`, scp
or sftp; posted and withdrawn by a decommission."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from leeward.common.clock import ManualClock
from leeward.fleet import announcements
from leeward.fleet.store.models import AnnouncementRow, EnvironmentRow
from tests.conftest import run_ssh, ssh_access, until
from tests.fleet.test_api import error_of


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def stored(f: Any) -> int:
    async with f.fleet.store.read() as session:
        return int((await session.execute(select(func.count(AnnouncementRow.id)))).scalar_one())


async def test_bad_announcements_are_refused_with_a_sentence_and_nothing_stored(
    start_fleet, config_factory, sqlite_url
):
    clock = ManualClock(datetime.now(UTC))
    async with start_fleet(config_factory(sqlite_url), clock=clock, background=False) as f:
        now = clock.now()
        bad: list[tuple[dict[str, Any], int, str]] = [
            ({"text": "x", "regions": ["mars"]}, 422, "no region 'mars': the regions are north"),
            ({"text": "x", "hosts": ["h9"]}, 422, "no host 'h9': the hosts are north-h1"),
            ({"text": "x", "flavors": ["huge"]}, 422, "no flavor 'huge'"),
            ({"text": "x", "profiles": ["java"]}, 422, "no profile 'java': the profiles are web"),
            ({"text": "x", "users": ["mallory"]}, 422, "no user 'mallory'"),
            (
                {
                    "text": "x",
                    "startsAt": iso(now + timedelta(hours=2)),
                    "endsAt": iso(now + timedelta(hours=1)),
                },
                422,
                "must end after it starts",
            ),
            ({"text": "x", "endsAt": iso(now - timedelta(minutes=1))}, 422, "in the past"),
            ({"text": "x" * 20_001}, 422, "at most 20000"),
            ({"text": ""}, 422, "at least 1"),
            ({"text": "x", "severity": "apocalyptic"}, 422, "severity"),
        ]
        for body, status, fragment in bad:
            got, answer = await f.admin.call("POST", "/v1/admin/announcements", body)
            assert got == status, (body, answer)
            message = error_of(answer).message
            assert fragment.lower() in message.lower(), (fragment, message)
            assert message.endswith("."), message
        # 10 MB of Markdown: the body limit answers before anything parses it, in a sentence.
        huge = json.dumps({"text": "# big\n" * (10 * 1024 * 1024 // 6)}).encode()
        got, answer = await f.admin.call(
            "POST",
            "/v1/admin/announcements",
            data=io.BytesIO(huge),
            headers={"Content-Type": "application/json"},
        )
        assert got == 413, answer
        assert "too large" in error_of(answer).message
        # A user may not post.
        got, answer = await f.api.call("POST", "/v1/admin/announcements", {"text": "hi"})
        assert got == 403 and "admin" in error_of(answer).message
        assert await stored(f) == 0

        # HTML and script are text: stored as given (clients render them inert).
        text = "<script>alert('x')</script> <b>bold</b> [link](javascript:alert(1))"
        got, made = await f.admin.call("POST", "/v1/admin/announcements", {"text": text})
        assert got == 201, made
        assert made["text"] == text and made["revision"] == 1 and made["active"]
        # Editing: a new end is no new revision; new text is.
        id_ = made["id"]
        got, edited = await f.admin.call(
            "PATCH",
            f"/v1/admin/announcements/{id_}",
            {"endsAt": iso(clock.now() + timedelta(hours=1))},
        )
        assert got == 200 and edited["revision"] == 1, edited
        got, answer = await f.admin.call(
            "PATCH",
            f"/v1/admin/announcements/{id_}",
            {"endsAt": iso(clock.now() - timedelta(hours=1))},
        )
        assert got == 422 and "past" in error_of(answer).message
        got, edited = await f.admin.call(
            "PATCH", f"/v1/admin/announcements/{id_}", {"text": "plain now"}
        )
        assert edited["revision"] == 2 and edited["text"] == "plain now"
        got, answer = await f.admin.call("PATCH", "/v1/admin/announcements/999", {"text": "y"})
        assert got == 404, answer
        _, listed = await f.admin.call("GET", "/v1/admin/announcements?active=true")
        assert [a["id"] for a in listed["announcements"]] == [id_]
        got, gone = await f.admin.call("DELETE", f"/v1/admin/announcements/{id_}")
        assert got == 200 and gone["withdrawnAt"] is not None and not gone["active"]
        _, listed = await f.admin.call("GET", "/v1/admin/announcements?active=true")
        assert listed["announcements"] == []
        _, listed = await f.admin.call("GET", "/v1/admin/announcements?active=false")
        assert [a["id"] for a in listed["announcements"]] == [id_]
        got, answer = await f.admin.call("PATCH", f"/v1/admin/announcements/{id_}", {"text": "z"})
        assert got == 409, answer


async def test_scopes_schedules_and_dismissals_without_environments(
    start_fleet, config_factory, database_url
):
    """Named users and everyone; the schedule read at each request; next_change (on SQLite
    and PostgreSQL: the store's times compared in its queries)."""
    clock = ManualClock(datetime.now(UTC))
    async with start_fleet(config_factory(database_url), clock=clock, background=False) as f:
        bob = await f.user("bob")
        start = clock.now() + timedelta(seconds=2)
        end = start + timedelta(minutes=10)
        _, to_bob = await f.admin.call(
            "POST",
            "/v1/admin/announcements",
            {"text": "for bob", "users": ["bob"], "startsAt": iso(start), "endsAt": iso(end)},
        )
        _, everyone = await f.admin.call(
            "POST", "/v1/admin/announcements", {"text": "for all", "severity": "critical"}
        )
        mine = lambda who: who.call("GET", "/v1/announcements")  # noqa: E731
        _, got = await mine(bob)
        assert [a["text"] for a in got["announcements"]] == ["for all"]
        async with f.fleet.store.read() as session:
            assert await announcements.next_change(session, clock.now()) == start
        clock.advance(2)
        _, got = await mine(bob)
        assert [a["text"] for a in got["announcements"]] == ["for bob", "for all"]
        _, got = await mine(f.api)  # alice
        assert [a["text"] for a in got["announcements"]] == ["for all"]
        async with f.fleet.store.read() as session:
            assert await announcements.next_change(session, clock.now()) == end

        # Dismissed at its revision; back when its content changes, not when its end does.
        path = f"/v1/announcements/{to_bob['id']}/dismiss"
        status, answer = await f.api.call("POST", path, {"revision": 1})
        assert status == 404, answer  # not alice's
        status, answer = await bob.call("POST", path, {"revision": 7})
        assert status == 409 and "revision 1" in error_of(answer).message
        status, answer = await bob.call("POST", path, {"revision": 1})
        assert status == 200 and answer["dismissed"], answer
        _, got = await mine(bob)
        assert [a["dismissed"] for a in got["announcements"]] == [True, False]
        await f.admin.call(
            "PATCH",
            f"/v1/admin/announcements/{to_bob['id']}",
            {"endsAt": iso(end + timedelta(minutes=1))},
        )
        _, got = await mine(bob)
        assert got["announcements"][0]["dismissed"] is True
        await f.admin.call(
            "PATCH", f"/v1/admin/announcements/{to_bob['id']}", {"text": "for bob, again"}
        )
        _, got = await mine(bob)
        assert got["announcements"][0] == got["announcements"][0] | {
            "text": "for bob, again",
            "revision": 2,
            "dismissed": False,
        }
        clock.advance(timedelta(minutes=12))
        _, got = await mine(bob)
        assert [a["text"] for a in got["announcements"]] == ["for all"]
        del everyone


async def login(paths: Any, alias: str, timeout: float = 30) -> str:
    """An interactive login with the real OpenSSH client in a PTY (`-tt`): the shell reads
    `exit` and ends; everything the terminal got."""
    proc = await asyncio.create_subprocess_exec(
        "ssh",
        "-tt",
        "-F",
        str(paths.ssh_config),
        "-o",
        "BatchMode=yes",
        alias,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"exit\n"), timeout)
    assert proc.returncode == 0, (proc.returncode, out, err)
    return out.decode(errors="replace")


async def test_a_region_announcement_at_its_start_in_the_api_and_the_ssh_login(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    async with start_fleet(config_factory(sqlite_url), clock=clock, background=False) as f:
        made = {}
        for name, region in (("up-north", "north"), ("down-south", "south")):
            status, env = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": name, "region": region},
            )
            assert status == 202, env
            made[name] = env
        for env in made.values():
            await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        assert "[leeward" not in await login(paths, "up-north")

        # Escape sequences that would set the terminal's title and colour, and HTML.
        text = "Maintenance <script>alert(1)</script>\x1b]0;pwned\x07 \x1b[31mred\u202e\nline two"
        start = clock.now() + timedelta(seconds=2)
        status, posted = await f.admin.call(
            "POST",
            "/v1/admin/announcements",
            {
                "text": text,
                "severity": "warning",
                "regions": ["north"],
                "startsAt": iso(start),
                "actions": [{"kind": "link", "label": "Status", "url": "https://status.test/"}],
            },
        )
        assert status == 201, posted
        assert posted["text"] == text  # stored as given
        _, mine = await f.api.call("GET", "/v1/announcements")
        assert mine["announcements"] == []
        assert "[leeward" not in await login(paths, "up-north")

        clock.advance(2)
        _, mine = await f.api.call("GET", "/v1/announcements")
        assert [(a["id"], a["environments"]) for a in mine["announcements"]] == [
            (posted["id"], ["up-north"])
        ]
        screen = await login(paths, "up-north")
        banner = "[leeward warning] Maintenance <script>alert(1)</script>]0;pwned [31mred\r\n"
        assert banner in screen, screen
        assert "  line two\r\n" in screen and "Status: https://status.test/" in screen
        assert screen.index("[leeward warning]") < screen.index("line two")
        for escape in ("\x1b]0;pwned", "\x1b[31m", "\x07", "\u202e"):
            assert escape not in screen
        assert "[leeward" not in await login(paths, "down-south")

        # Commands, scp and sftp: byte-clean.
        code, out, err = await run_ssh(paths, "up-north", "printf clean")
        assert (code, out, err) == (0, "clean", "")
        local = tmp_path / "sent.bin"
        local.write_bytes(b"\x00payload\n")
        config = str(paths.ssh_config)
        for argv in (
            ["scp", "-F", config, "-q", str(local), "up-north:sent.bin"],
            ["scp", "-F", config, "-q", "up-north:sent.bin", str(tmp_path / "back.bin")],
        ):
            done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=60)
            assert done.returncode == 0 and b"leeward" not in done.stdout + done.stderr, done
        assert (tmp_path / "back.bin").read_bytes() == b"\x00payload\n"
        done = await asyncio.to_thread(
            subprocess.run,
            ["sftp", "-F", config, "-q", "-b", "-", "up-north"],
            input=b"get sent.bin " + str(tmp_path / "sftp.bin").encode() + b"\n",
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0 and b"[leeward" not in done.stdout + done.stderr, done
        assert (tmp_path / "sftp.bin").read_bytes() == b"\x00payload\n"

        # ~/.hushlogin silences it.
        assert (await run_ssh(paths, "up-north", "touch ~/.hushlogin"))[0] == 0
        assert "[leeward" not in await login(paths, "up-north")
        assert (await run_ssh(paths, "up-north", "rm ~/.hushlogin"))[0] == 0
        assert "[leeward warning]" in await login(paths, "up-north")

        # `[announcements] ssh_banner = false` in the owner's config.toml: the profile reaches
        # the agent, and the logins after it have no banner.
        status, answer = await f.api.call(
            "PUT", "/v1/profile/config", {"announcements": {"ssh_banner": False}}
        )
        assert status == 200, answer

        async def quiet() -> bool:
            return "[leeward" not in await login(paths, "up-north")

        await until(quiet, "the login banner turned off by config.toml", timeout=30)
        await f.api.call("PUT", "/v1/profile/config", {})

        async def loud() -> bool:
            return "[leeward warning]" in await login(paths, "up-north")

        await until(loud, "the login banner back on", timeout=30)

        # Dismissed in the API: gone from the user's lists until its text changes. The login
        # banner shows what is active (it is the environment's, not one user's view).
        await f.api.call("POST", f"/v1/announcements/{posted['id']}/dismiss", {"revision": 1})
        _, mine = await f.api.call("GET", "/v1/announcements")
        assert mine["announcements"][0]["dismissed"] is True
        await f.admin.call(
            "PATCH", f"/v1/admin/announcements/{posted['id']}", {"text": "Maintenance moved"}
        )
        _, mine = await f.api.call("GET", "/v1/announcements")
        assert mine["announcements"][0]["dismissed"] is False

        # Withdrawn: the next login has no banner.
        await f.admin.call("DELETE", f"/v1/admin/announcements/{posted['id']}")
        assert "[leeward" not in await login(paths, "up-north")

        # The agent's route takes only an agent's token.
        status, answer = await f.api.call(
            "GET", f"/v1/agent/announcements?environment={made['up-north']['id']}"
        )
        assert status == 401, answer


async def test_a_login_does_not_wait_on_a_fleet_that_does_not_answer(tmp_path: Path):
    """The banner's deadline: a fleet that accepts and never answers costs a login about a
    second, and prints nothing; one that answered before stands in with its last answer."""
    import time

    from leeward.agent.banner import DEADLINE, Banner
    from leeward.agent.fleet import AgentFleet, FleetEndpoint

    answered: list[bytes] = []
    hang = asyncio.Event()
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if hang.is_set():  # a fleet that never answers, until the test is over
            await release.wait()
            writer.close()
            return
        body = json.dumps(
            {
                "announcements": [
                    {
                        "id": 1,
                        "text": "hello\x1b[2J",
                        "severity": "info",
                        "scope": {},
                        "startsAt": "2026-01-01T00:00:00Z",
                        "revision": 1,
                        "createdBy": "root",
                        "createdAt": "2026-01-01T00:00:00Z",
                        "updatedAt": "2026-01-01T00:00:00Z",
                        "active": True,
                    }
                ]
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()
        answered.append(body)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = AgentFleet(lambda: FleetEndpoint(f"http://127.0.0.1:{port}", "t", "e-1"))
    enabled = [True]
    banner = Banner(fleet, lambda: tmp_path, lambda: enabled[0])
    try:
        assert await banner() == b"[leeward info] hello[2J\r\n\r\n"
        hang.set()
        started = time.monotonic()
        assert await banner() == b"[leeward info] hello[2J\r\n\r\n"  # the last answer
        assert time.monotonic() - started < DEADLINE + 0.5
        fresh = Banner(fleet, lambda: tmp_path)
        started = time.monotonic()
        assert await fresh() == b""
        assert time.monotonic() - started < DEADLINE + 0.5
        enabled[0] = False  # `[announcements] ssh_banner = false`
        assert await banner() == b""
        await until(lambda: len(answered) == 1, "the first answer")
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_a_decommission_posts_its_announcement_and_withdraws_it(
    start_fleet, config_factory, sqlite_url
):
    from leeward.fleet.decommission import decommissions

    clock = ManualClock(datetime.now(UTC))
    async with start_fleet(config_factory(sqlite_url), clock=clock, background=False) as f:
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "doomed", "region": "north"},
        )
        env = await f.api.wait_state(env["id"], {"running"})
        host = env["host"]
        by = clock.now() + timedelta(hours=2)
        status, answer = await f.admin.call(
            "POST", f"/v1/admin/hosts/{host}/decommission", {"by": iso(by)}
        )
        assert status == 202, answer
        _, mine = await f.api.call("GET", "/v1/announcements")
        [a] = mine["announcements"]
        assert a["source"] == f"decommission:{host}" and a["severity"] == "warning"
        assert a["scope"]["hosts"] == [host] and a["environments"] == ["doomed"]
        assert datetime.fromisoformat(a["endsAt"]) == by
        assert [(x["kind"], x["command"]) for x in a["actions"]] == [("move", "leeward move NAME")]
        async with f.fleet.store.read() as session:
            row = await session.get(EnvironmentRow, env["id"])
            [at_login] = await announcements.for_environment(session, clock.now(), row)
        assert at_login.actions[0].command == "leeward move doomed"
        bob = await f.user("bob")
        _, theirs = await bob.call("GET", "/v1/announcements")
        assert theirs["announcements"] == []  # nothing of bob's on that host

        # Cancelled (the host put back into service): withdrawn.
        status, answer = await f.admin.call("POST", f"/v1/admin/hosts/{host}/activate")
        assert status == 200, answer
        _, mine = await f.api.call("GET", "/v1/announcements")
        assert mine["announcements"] == []

        # An empty host: retired in the decommission's next round, and its banner withdrawn.
        empty = next(h for h in ("north-h1", "north-h2") if h != host)
        status, answer = await f.admin.call(
            "POST", f"/v1/admin/hosts/{empty}/decommission", {"by": iso(by)}
        )
        assert status == 202, answer
        _, active = await f.admin.call("GET", "/v1/admin/announcements?active=true")
        assert [a["source"] for a in active["announcements"]] == [f"decommission:{empty}"]
        await decommissions(f.fleet)
        _, active = await f.admin.call("GET", "/v1/admin/announcements?active=true")
        assert active["announcements"] == []
        _, every = await f.admin.call("GET", "/v1/admin/announcements")
        assert all(a["withdrawnAt"] for a in every["announcements"]), every
