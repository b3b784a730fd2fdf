"""The daemon's backup methods against a real fleet, real agents and restic: list on a fresh
devserver, back up now with `$/progress`, show what the snapshot holds, restore a path into the
home and a backup into a new devserver, bad params refused with a sentence while the daemon goes
on, and a cold move followed stage by stage. Then the poll behind `now` and `move` alone, on a
clock that leaps: it rides through a fleet out of reach, not through a refusal, and ends."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from leeward.client.credentials import Credentials, store_credentials
from leeward.daemon import backups
from leeward.daemon.errors import DaemonError
from leeward_protocol.daemon import FleetLinkState
from tests.cli.sandbox import make_sandbox
from tests.conftest import run_ssh, ssh_access
from tests.daemon.kit import DaemonClient, running_daemon

INVALID_PARAMS = -32602
FLEET_ERROR = -32001


async def signed_in(d: DaemonClient) -> None:
    await d.until(
        lambda: any(s["fleet"] == "connected" for s in d.statuses),
        what="the daemon never reached the fleet",
    )


async def test_backups_through_the_daemon(start_fleet, config_factory, sqlite_url, tmp_path: Path):
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 3600  # no scheduled backup gets in the way
    (tmp_path / "user").mkdir()
    sandbox = make_sandbox(tmp_path / "user")
    async with start_fleet(config) as f:
        store_credentials(sandbox.paths.credentials, Credentials(fleet=f.url, token=f.api.token))
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "keep", "region": "north"},
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"}, timeout=120)
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        code, _, err = await run_ssh(
            paths, "keep", "mkdir -p notes && printf 'kept words\\n' > notes/hello.txt"
        )
        assert code == 0, err

        async with running_daemon(sandbox, {"logLevel": "debug"}) as d:
            await signed_in(d)

            # -- a fresh devserver: no backups, and its status
            fresh = await d.request("leeward/backups/list", {"environment": "keep"})
            assert fresh["environment"] == "keep" and fresh["backups"] == []
            assert fresh["status"]["lastSuccessAt"] is None
            assert fresh["status"]["intervalMinutes"] == config.backup.interval_minutes
            assert fresh["status"]["running"] is False

            # -- back up now, with progress on the client's token, until it has ended
            backup = await d.request(
                "leeward/backups/now",
                {"environment": "keep", "workDoneToken": "backup-1"},
                timeout=600,
            )
            assert backup["state"] == "succeeded", backup
            assert backup["trigger"] == "request" and backup["snapshot"]
            assert backup["totalFiles"] >= 1 and backup["progress"] == 1.0
            steps = d.progress["backup-1"]
            assert steps[0]["kind"] == "begin" and steps[0]["title"] == "Backing up keep"
            assert steps[-1]["kind"] == "end"
            assert steps[-1]["message"].startswith(f"Backup {backup['id']} of keep succeeded")
            reports = [s["percentage"] for s in steps if s["kind"] == "report"]
            assert reports == sorted(reports) and all(0 <= p <= 100 for p in reports)

            listed = await d.request("leeward/backups/list", {"environment": env["id"]})
            assert [b["id"] for b in listed["backups"]] == [backup["id"]]
            assert listed["status"]["lastSuccessAt"] is not None
            assert listed["status"]["lastBackup"] == backup["id"]
            # The environment the extension's status bar shows carries it too (fleet event).
            await d.until(
                lambda: any(
                    e["id"] == env["id"] and (e["backup"] or {}).get("lastBackup") == backup["id"]
                    for r in d.environments[-1:]
                    for e in r["environments"]
                ),
                what="no environment event with the backup's status",
            )

            # -- what the snapshot holds: the home, then a directory in it
            root = await d.request(
                "leeward/backups/show", {"environment": "keep", "backup": backup["id"]}
            )
            assert root["path"] == "" and root["backup"]["id"] == backup["id"]
            assert {"path": "notes", "type": "dir"}.items() <= entry(root, "notes").items()
            notes = await d.request(
                "leeward/backups/show",
                {"environment": "keep", "backup": backup["id"], "path": "notes/"},
            )
            hello = entry(notes, "notes/hello.txt")
            assert hello["type"] == "file" and hello["size"] == len("kept words\n")

            # -- restore one file into the home, beside what is there
            restored = await d.request(
                "leeward/backups/restore",
                {"environment": "keep", "backup": backup["id"], "paths": ["notes/hello.txt"]},
                timeout=300,
            )
            assert restored["environment"] == "keep" and restored["destination"]
            assert restored["files"] == 1 and restored["backup"]["id"] == backup["id"]
            code, out, err = await run_ssh(
                paths, "keep", f"cat {restored['destination']}/notes/hello.txt"
            )
            assert (code, out) == (0, "kept words\n"), err

            # -- or into a new devserver, in the other region
            copy = await d.request(
                "leeward/backups/restore",
                {"environment": "keep", "to": {"name": "copy", "region": "south"}},
            )
            assert copy["environment"] == "copy" and copy["destination"] is None
            assert copy["backup"]["id"] == backup["id"], "the latest successful one"
            made = await f.api.wait_state(copy["environmentId"], {"running"}, timeout=120)
            assert (made["name"], made["region"], made["flavor"]) == ("copy", "south", "tiny")

            # -- bad params: a sentence each, and the daemon goes on
            bad = await d.error_of("leeward/backups/show", {"environment": "keep", "backup": "x"})
            assert bad.code == INVALID_PARAMS and bad.message == "backup: must be a whole number."
            bad = await d.error_of(
                "leeward/backups/restore",
                {"environment": "keep", "to": {"flavor": "tiny"}, "paths": ["notes"]},
            )
            assert bad.code == INVALID_PARAMS
            assert "exactly one of `to` (a new devserver) or `paths`" in bad.message
            bad = await d.error_of(
                "leeward/backups/restore", {"environment": "keep", "paths": ["../etc"]}
            )
            assert bad.code == INVALID_PARAMS and bad.message.startswith("paths.0: '../etc'")
            bad = await d.error_of("leeward/backups/now", {"environment": "keep", "colour": 1})
            assert bad.code == INVALID_PARAMS and "colour: unknown field" in bad.message
            bad = await d.error_of("leeward/environments/move", {"environment": "keep"})
            assert bad.code == INVALID_PARAMS and "give a flavor, a region or both" in bad.message
            bad = await d.error_of(
                "leeward/environments/move", {"environment": "keep", "region": "North"}
            )
            assert bad.code == INVALID_PARAMS and bad.message.startswith("region: must be")
            bad = await d.error_of("leeward/backups/list", {"environment": "nowhere"})
            assert bad.code == FLEET_ERROR and "nowhere" in bad.message, bad.message
            assert bad.data["status"] == 404
            bad = await d.error_of("leeward/backups/show", {"environment": "keep", "backup": 999})
            assert bad.code == FLEET_ERROR and "no backup 999" in bad.message, bad.message
            bad = await d.error_of("leeward/backups/now", {"environment": "nowhere"})
            assert bad.code == FLEET_ERROR and "nowhere" in bad.message
            status = await d.request("leeward/status/get", {})
            assert status["fleet"] == "connected"

            # -- a cold move to the other region, stage by stage, until it is done
            moved = await d.request(
                "leeward/environments/move",
                {"environment": "keep", "region": "south", "workDoneToken": "move-1"},
                timeout=600,
            )
            assert moved["state"] == "done", moved
            assert (moved["flavor"], moved["region"], moved["stage"]) == ("tiny", "south", "done")
            assert moved["environmentId"] == env["id"] and moved["targetId"]
            steps = d.progress["move-1"]
            assert steps[0]["kind"] == "begin" and steps[0]["title"] == "Moving keep to south"
            assert steps[-1] == {
                "kind": "end",
                "message": "done: keep is now a tiny devserver in south",
            }
            stages = [s["message"].split(":")[0] for s in steps if s["kind"] == "report"]
            order = ["backing-up", "creating", "starting", "handing-over", "deleting", "done"]
            assert stages and stages == sorted(stages, key=order.index), stages
            now = await f.api.wait_state("keep", {"running"})
            assert now["id"] == moved["targetId"] and now["region"] == "south"
            assert not [line for line in d.logs if "Traceback" in line]


def entry(detail: dict[str, Any], path: str) -> dict[str, Any]:
    found = [e for e in detail["entries"] if e["path"] == path]
    assert found, f"{path} is not in {[e['path'] for e in detail['entries']]}"
    return found[0]


# ------------------------------------------------------------------ the poll, on a leaping clock


class LeapClock:
    """Time that passes at once: each sleep moves it on."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class Answers:
    """A stand-in Daemon whose fleet answers from a script (an exception is raised)."""

    def __init__(self, *answers: Any, state: FleetLinkState = FleetLinkState.CONNECTED) -> None:
        self.clock = LeapClock()
        self.link = SimpleNamespace(state=state)
        self.answers = list(answers)
        self.asked = 0

    async def _call(self, work: Any, attempts: int = 3) -> Any:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def poll(daemon: Answers, seconds: float = 3600) -> tuple[str, list[str]]:
    seen: list[str] = []
    last = await backups._until(
        daemon,  # type: ignore[arg-type]
        lambda c: c,
        first="running",
        running=lambda a: a.startswith("running"),
        seen=seen.append,
        seconds=seconds,
        late="too late",
    )
    return last, seen


async def test_a_poll_rides_through_a_fleet_out_of_reach_but_not_a_refusal() -> None:
    lost = DaemonError("Cannot reach the fleet.")
    daemon = Answers(
        "running 20", lost, lost, "running 60", "done", state=FleetLinkState.UNREACHABLE
    )
    assert await poll(daemon) == ("done", ["running 20", "running 60", "done"])
    busy = DaemonError("The fleet is restarting.", data={"status": 503})
    assert (await poll(Answers(busy, "done")))[0] == "done"

    refused = DaemonError("No environment 'keep'.", data={"status": 404})
    daemon = Answers("running 20", refused, "done")
    with pytest.raises(DaemonError, match="No environment"):
        await poll(daemon)
    assert daemon.asked == 2
    # Out of reach with the link up: something else (not signed in, an odd answer): at once.
    with pytest.raises(DaemonError, match="Cannot reach"):
        await poll(Answers(lost, "done"))


async def test_a_poll_gives_up_at_its_deadline_or_after_the_fleets_patience() -> None:
    daemon = Answers("running")
    with pytest.raises(DaemonError, match="too late"):
        await poll(daemon, seconds=60)
    assert 60 < daemon.clock.t < 70 and daemon.asked > 12, "a steady step of about 5 s"

    daemon = Answers(DaemonError("Cannot reach the fleet."), state=FleetLinkState.UNREACHABLE)
    with pytest.raises(DaemonError, match="Cannot reach"):
        await poll(daemon)
    assert backups.FLEET_PATIENCE < daemon.clock.t < backups.FLEET_PATIENCE + 10
