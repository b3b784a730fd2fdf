"""Idle stop, with a manual clock: a real fleet, real agents in their sandboxes, and the real
OpenSSH client through `leeward proxy` (the ssh config `config-ssh` writes). The idle loop's
parts are run by hand as the clock moves (`idle.stop_idle`, `idle.dormancy`), and the agents'
heartbeats, in real time, say what keeps each environment alive.

An idle shell keeps its environment up past its policy's time; without one it stops at that
time, with its owner told; `ssh ENV` starts it again, its home as it was. A stopped environment
is deleted, expires, and, dormant, is deleted with notice (a devserver after a last backup)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from leeward.common.clock import ManualClock
from leeward.fleet import idle, lifecycle
from leeward.fleet.activity import kept_by
from leeward.fleet.config_notify import IdlePolicy
from leeward.fleet.runtime import Fleet
from leeward.fleet.store.models import BackupRepositoryRow, BackupRow, NotificationRow
from leeward_protocol.fleet import AgentHeartbeat
from leeward_protocol.notify import NotificationKind
from tests.conftest import Api, small_config, until
from tests.fleet.test_backups import backed_up, repository_of
from tests.relay.conftest import proxied

POLICY_SECONDS = 15
"""The containers' idle time here. The manual clock moves by little more than it, so that the
host certificates issued at its time stay valid for the real OpenSSH client (the CA allows a
minute of skew)."""


async def notifications(fleet: Fleet, env_id: str, kind: NotificationKind) -> list[Any]:
    async with fleet.store.read() as session:
        rows = await session.execute(
            select(NotificationRow).where(
                NotificationRow.environment_id == env_id, NotificationRow.kind == kind.value
            )
        )
        return list(rows.scalars())


async def heard_since(api: Api, name: str, moment: datetime) -> dict[str, Any]:
    """The environment once a heartbeat has been taken at or after `moment` (fleet time)."""

    async def beat() -> dict[str, Any] | None:
        status, env = await api.call("GET", f"/v1/environments/{name}")
        assert status == 200, env
        seen = env.get("lastSeenAt")
        return env if seen and datetime.fromisoformat(seen) >= moment else None

    result: dict[str, Any] = await until(beat, f"a heartbeat of {name} after {moment}")
    return result


async def stopped_by_the_loop(f: Any, clock: ManualClock, name: str) -> dict[str, Any]:
    """Move the clock past `name`'s stop time, wait for a heartbeat that finds it idle, and
    run the idle stop: it is stopped."""
    _, env = await f.api.call("GET", f"/v1/environments/{name}")
    stops_at = datetime.fromisoformat(env["activity"]["stopsAt"])
    clock.advance(stops_at - clock.now() + timedelta(seconds=1))
    await heard_since(f.api, name, clock.now())
    assert env["id"] in await idle.stop_idle(f.fleet)
    await f.fleet.idle()
    _, env = await f.api.call("GET", f"/v1/environments/{name}")
    assert env["state"] == "stopped", env
    return env


async def create(api: Api, body: dict[str, Any], *, idles: bool = True) -> dict[str, Any]:
    status, env = await api.call("POST", "/v1/environments", body)
    assert status in (201, 202), env
    await api.wait_state(env["id"], {"running"}, timeout=120)
    if not idles:
        return env
    # Its first heartbeat starts its idle time.
    await until(lambda: _activity(api, env["id"]), f"{env['name']}'s first heartbeat", timeout=30)
    return env


async def _activity(api: Api, env_id: str) -> Any:
    _, env = await api.call("GET", f"/v1/environments/{env_id}")
    return (env.get("activity") or {}).get("stopsAt")


async def test_an_open_session_keeps_it_up_without_one_it_stops_and_ssh_starts_it_again(
    start_fleet, config_factory, database_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    config = config_factory(database_url, regions=1)
    config.idle.containers = IdlePolicy(stop_after_minutes=POLICY_SECONDS / 60)
    async with start_fleet(config, clock=clock, background=False) as f:
        env = await create(f.api, {"kind": "container", "profile": "web", "name": "box"})
        home = tmp_path / "client"
        paths, xdg = await proxied(f.url, f.api, home, "box")

        def ssh(*args: str, stdin: Any = subprocess.DEVNULL) -> Any:
            return asyncio.create_subprocess_exec(
                "ssh",
                "-F",
                str(paths.ssh_config),
                "-o",
                "BatchMode=yes",
                *args,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **xdg},
            )

        async def run(command: str) -> tuple[int, str, str]:
            proc = await ssh("box", command)
            out, err = await asyncio.wait_for(proc.communicate(), 180)
            return proc.returncode, out.decode(), err.decode()

        code, _, err = await run("echo 'written before the stop' > marker")
        assert code == 0, err

        # A connection that runs VS Code's server (as Remote-SSH does) is told apart.
        editor = await ssh("box", "test -n ~/.vscode-server/bin && cat", stdin=subprocess.PIPE)
        try:

            async def kept_by() -> str:
                _, env = await f.api.call("GET", "/v1/environments/box")
                return str(env["activity"]["keptBy"])

            await until(kept_by, "an editor's connection", expected="a VS Code connection")
        finally:
            editor.kill()
            await editor.wait()

        # An idle shell: a real PTY session that nobody types into.
        shell = await ssh("-tt", "box", stdin=subprocess.PIPE)
        try:
            assert shell.stdout is not None
            await asyncio.wait_for(shell.stdout.read(1), 60)  # the shell is up

            clock.advance(timedelta(seconds=POLICY_SECONDS + 5))  # past its first stop time
            # No heartbeat yet since the clock moved: old news never stops it.
            assert await idle.stop_idle(f.fleet) == []
            kept = await heard_since(f.api, "box", clock.now())
            assert kept["activity"]["keptBy"] == "an SSH session", kept["activity"]
            assert datetime.fromisoformat(kept["activity"]["activeAt"]) == clock.now()
            assert await idle.stop_idle(f.fleet) == []
            assert kept["state"] == "running"
        finally:
            shell.kill()
            await shell.wait()

        # Without it: nothing keeps it up, and it stops at its policy's time, not before.
        _, env = await f.api.call("GET", "/v1/environments/box")
        stops_at = datetime.fromisoformat(env["activity"]["stopsAt"])
        assert stops_at == clock.now() + timedelta(seconds=POLICY_SECONDS)
        clock.advance(timedelta(seconds=POLICY_SECONDS - 2))
        await heard_since(f.api, "box", clock.now())
        assert await idle.stop_idle(f.fleet) == []  # not yet
        stopped = await stopped_by_the_loop(f, clock, "box")
        assert stopped["activity"]["stoppedAt"] is not None
        (told,) = await notifications(f.fleet, env["id"], NotificationKind.IDLE_STOP)
        assert told.user == "alice" and "leeward start box" in told.body
        assert await f.fleet.provider.running([env["id"]]) == set()
        _, listed = await f.api.call("GET", "/v1/environments")
        assert [e["state"] for e in listed["environments"] if e["name"] == "box"] == ["stopped"]

        # `ssh box`: the proxy finds it stopped, has it started, says so, and connects.
        code, out, err = await run("cat marker")
        assert code == 0, err
        assert out == "written before the stop\n"
        assert "starting box, stopped for being idle" in err, err
        _, env = await f.api.call("GET", "/v1/environments/box")
        assert env["state"] == "running"
        assert env["activity"]["stoppedAt"] is None and env["activity"]["stopsAt"] is not None


async def test_a_stopped_environment_is_deleted_expires_and_starts_with_leeward_start(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    config = config_factory(sqlite_url, regions=1)
    config.idle.containers = IdlePolicy(stop_after_minutes=1, delete_after_days=3)
    async with start_fleet(config, clock=clock, background=False) as f:
        gone = await create(f.api, {"kind": "container", "profile": "web", "name": "gone"})
        ends = await create(f.api, {"kind": "container", "profile": "web", "hours": 2})
        back = await create(f.api, {"kind": "container", "profile": "web", "name": "back"})
        # All three idle: they stop in one round of the loop.
        clock.advance(timedelta(minutes=1, seconds=1))
        for env in (gone, ends, back):
            await heard_since(f.api, env["id"], clock.now())
        assert set(await idle.stop_idle(f.fleet)) == {gone["id"], ends["id"], back["id"]}
        await f.fleet.idle()
        for env in (gone, ends, back):
            _, now = await f.api.call("GET", f"/v1/environments/{env['id']}")
            assert now["state"] == "stopped", now

        status, body = await f.api.call("DELETE", "/v1/environments/gone")
        assert status == 202, body
        await f.api.wait_state(gone["id"], {"deleted"})
        assert not (config.provider.data_dir / gone["id"]).exists()

        # A stopped one can be extended, and still expires.
        status, body = await f.api.call(
            "POST", f"/v1/environments/{ends['id']}/extend", {"hours": 1}
        )
        assert status == 200, body
        clock.advance(timedelta(hours=3, minutes=5))
        assert ends["id"] in await lifecycle.reap_expired(f.fleet)
        await f.api.wait_state(ends["id"], {"deleted"})

        status, body = await f.api.call("POST", "/v1/environments/back/start")
        assert status == 202, body
        assert body["state"] == "provisioning"
        await f.api.wait_state(back["id"], {"running"}, timeout=120)
        # Starting one that runs is answered as it is; another's is not there to start.
        status, body = await f.api.call("POST", "/v1/environments/back/start")
        assert status == 202 and body["state"] == "running", body
        bob = await f.user("bob")
        status, body = await bob.call("POST", "/v1/environments/back/start")
        assert status == 404, body


async def test_a_dormant_devserver_is_told_backed_up_then_deleted(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    config = config_factory(sqlite_url, regions=1)
    config.backup.check_seconds = 3600
    config.idle.temporary_devservers = IdlePolicy(
        stop_after_minutes=1, delete_after_days=2, notice_hours=24
    )
    async with start_fleet(config, clock=clock, background=False) as f:
        body = {"kind": "devserver", "flavor": "tiny", "name": "old", "lifespan": "temporary"}
        env = await create(f.api, {**body, "hours": 120})
        await backed_up(f.api, "old")  # its repository, whose key the test spoils below
        permanent = await create(
            f.api,
            {"kind": "devserver", "flavor": "tiny", "name": "pet", "lifespan": "permanent"},
            idles=False,
        )
        await heard_since(f.api, "pet", clock.now())
        _, pet = await f.api.call("GET", f"/v1/environments/{permanent['id']}")
        assert pet["activity"] is None, pet  # a permanent devserver never stops for being idle
        stopped = await stopped_by_the_loop(f, clock, "old")
        deletes_at = datetime.fromisoformat(stopped["activity"]["deletesAt"])
        assert deletes_at == datetime.fromisoformat(stopped["activity"]["stoppedAt"]) + timedelta(
            days=2
        )

        assert await idle.dormancy(f.fleet) == []  # a day before its notice
        assert await notifications(f.fleet, env["id"], NotificationKind.DORMANT_DELETE) == []
        clock.advance(timedelta(days=1, minutes=1))
        # Told once, a day ahead; not deleted before the day is out.
        for _ in range(3):
            assert await idle.dormancy(f.fleet) == []
        (told,) = await notifications(f.fleet, env["id"], NotificationKind.DORMANT_DELETE)
        assert told.user == "alice" and "leeward start old" in told.body
        # The round came a minute into the notice's day: the delete waits for the whole day.
        said = datetime.fromisoformat(json.loads(told.data)["deletes_at"].replace("Z", "+00:00"))
        assert said == told.created_at + timedelta(days=1) == deletes_at + timedelta(minutes=1)

        # Its last backup fails (the store refuses its key): it is kept, and tried again later.
        repo = await repository_of(f, env["id"])
        async with f.fleet.store.write() as session:
            row = await session.get(BackupRepositoryRow, repo.id)
            assert row is not None
            key, row.password = row.password, "not-the-key-any-more"
        clock.advance(timedelta(days=1))
        assert await idle.dormancy(f.fleet) == [env["id"]]
        await f.fleet.idle()
        _, kept = await f.api.call("GET", f"/v1/environments/{env['id']}")
        assert kept["state"] == "stopped", kept
        assert "its last backup failed" in kept["statusMessage"], kept
        retry = datetime.fromisoformat(kept["activity"]["deletesAt"])
        assert retry == clock.now() + idle.BACKUP_RETRY
        assert await idle.dormancy(f.fleet) == []  # not at every round

        async with f.fleet.store.write() as session:
            row = await session.get(BackupRepositoryRow, repo.id)
            assert row is not None
            row.password = key
        clock.advance(idle.BACKUP_RETRY)
        assert await idle.dormancy(f.fleet) == [env["id"]]
        await f.fleet.idle()
        _, gone = await f.api.call("GET", f"/v1/environments/{env['id']}")
        assert gone["state"] == "deleted", gone
        async with f.fleet.store.read() as session:
            runs = (
                await session.execute(
                    select(BackupRow)
                    .where(BackupRow.environment_id == env["id"])
                    .order_by(BackupRow.id)
                )
            ).scalars()
            assert [(r.trigger, r.state) for r in runs] == [
                ("request", "succeeded"),
                ("delete", "failed"),
                ("delete", "succeeded"),
            ]
        _, pet = await f.api.call("GET", "/v1/environments/pet")
        assert pet["state"] == "running"


def test_what_keeps_an_environment_up_in_words(tmp_path: Path):
    config = small_config(tmp_path, "sqlite+aiosqlite:///unused.db")
    config.idle.input_minutes = 30

    def said(**beat: Any) -> str | None:
        return kept_by(config, AgentHeartbeat(environment_id="e-x", **beat))

    assert said(sessions=2) == "2 SSH sessions"
    assert said(sessions=1, editor_sessions=1) == "a VS Code connection"
    assert said(sessions=3, editor_sessions=1) == "a VS Code connection and 2 SSH sessions"
    assert said(sessions=0, idle_seconds=190) == "input 3 min ago"
    assert said(sessions=0, idle_seconds=31 * 60) is None  # old input keeps nothing up
    assert said(sessions=0) is None
    # An agent older than idle stop sends only its sessions: they still count.
    old = AgentHeartbeat.model_validate({"environmentId": "e-x", "sessions": 1})
    assert kept_by(config, old) == "an SSH session"
