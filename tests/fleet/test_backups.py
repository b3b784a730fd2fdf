"""Backups of devservers, end to end: a real fleet, real agents in their sandboxes, restic, and
the real OpenSSH client writing and reading the homes.

Short here (1,000 files, 24 MiB; a 256 MiB sparse file; one decommission, with the fleet
restarted half-way); with LEEWARD_FULL (scripts/chaos) the home is the issue's 10,000 files and
1 GiB, the sparse file 2 GiB, and the decommission runs straight as well."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leeward.common.clock import ManualClock
from leeward.fleet import backups
from leeward.fleet.store.models import BackupRepositoryRow, EnvironmentRow
from leeward.providers import restic
from tests.conftest import run_ssh, ssh_access, until

FULL = bool(os.environ.get("LEEWARD_FULL"))
FILES = 10_000 if FULL else 1_000
BYTES = (1 << 30) if FULL else 24 << 20
SPARSE = "2G" if FULL else "256M"
CUT_BYTES = 300_000_000 if FULL else 150_000_000

pytestmark = pytest.mark.slow

GENERATE = r"""
import os, random, sys
root, count, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
size = max(total // count, 2)
for i in range(count):
    d = os.path.join(root, f"d{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"f{i:05d}.bin")
    with open(p, "wb") as f:
        f.write(os.urandom(random.randint(size // 2, size * 3 // 2)))
    os.chmod(p, random.choice([0o644, 0o600, 0o755, 0o640]))
    os.utime(p, ns=(1_600_000_000_000_000_000 + i * 1_000_000_123,) * 2)
os.symlink("d00/f00000.bin", os.path.join(root, "link-rel"))
os.symlink("/etc", os.path.join(root, "link-etc"))
os.mkfifo(os.path.join(root, "fifo"))
"""

CHANGE = r"""
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(0, count, 100):
    p = os.path.join(root, f"d{i % 50:02d}", f"f{i:05d}.bin")
    with open(p, "r+b") as f:
        f.write(os.urandom(64))
print(len(range(0, count, 100)))
"""

MANIFEST = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
for dirpath, dirs, files in os.walk(root):
    for name in dirs + files:
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)]
        if stat.S_ISLNK(st.st_mode):
            entry.append(os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            entry += [st.st_mtime_ns, st.st_uid, hashlib.sha256(open(p, "rb").read()).hexdigest()]
        out[os.path.relpath(p, root)] = entry
print(json.dumps(out, sort_keys=True))
"""


def python(script: str, *args: object) -> str:
    """`python3 -c SCRIPT ARGS` as one shell word list, the script passed hex-encoded."""
    code = script.encode().hex()
    return f"python3 -c 'exec(bytes.fromhex(\"{code}\"))' " + " ".join(str(a) for a in args)


async def ssh_ok(paths: Any, alias: str, command: str, timeout: float = 600) -> str:
    code, out, err = await run_ssh(paths, alias, command, timeout=timeout)
    assert code == 0, f"{command[:80]}: {err}"
    return out


async def backed_up(api: Any, env: str, timeout: float = 600) -> dict[str, Any]:
    status, started = await api.call("POST", f"/v1/environments/{env}/backups")
    assert status == 202, started

    async def done() -> dict[str, Any] | None:
        _, listing = await api.call("GET", f"/v1/environments/{env}/backups")
        row = next(b for b in listing["backups"] if b["id"] == started["id"])
        return None if row["state"] == "running" else row

    final: dict[str, Any] = await until(done, f"backup {started['id']}", timeout=timeout)
    assert final["state"] == "succeeded", final
    return final


async def test_backup_incremental_and_restore_elsewhere_is_byte_identical(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 3600  # this test takes its backups itself
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "keep", "region": "north"},
        )
        assert status == 202, env
        await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        await ssh_ok(paths, "keep", "mkdir work && " + python(GENERATE, "work", FILES, BYTES))
        # Caches and build outputs are left out by default; the user's own patterns too (their
        # config.toml, as their profile keeps it).
        status, body = await f.api.call(
            "PUT", "/v1/profile/config", {"backup": {"exclude": ["*.log", "/scratch"]}}
        )
        assert status == 200, body
        await ssh_ok(
            paths,
            "keep",
            "mkdir -p work/node_modules/x .cache/pip scratch work/scratch && echo c > .cache/pip/c"
            " && echo dep > work/node_modules/x/i.js && echo log > work/run.log"
            " && echo s > scratch/s && echo kept > work/scratch/k",
        )

        first = await backed_up(f.api, "keep")
        assert first["totalFiles"] >= FILES
        changed = int(await ssh_ok(paths, "keep", python(CHANGE, "work", FILES)))
        second = await backed_up(f.api, "keep")
        assert second["filesChanged"] == changed, second
        # Only the changed chunks: a small fraction of the first upload.
        assert second["dataAdded"] * 20 < first["dataAdded"], (first, second)

        _, listing = await f.api.call("GET", "/v1/environments/keep/backups")
        assert [b["id"] for b in listing["backups"]] == [second["id"], first["id"]]
        assert listing["status"]["lastBackup"] == second["id"]
        assert not listing["status"]["overdue"]
        _, shown = await f.api.call("GET", "/v1/environments/keep")
        assert shown["backup"]["lastSuccessAt"] is not None

        _, detail = await f.api.call(
            "GET", f"/v1/environments/keep/backups/{first['id']}?path=work"
        )
        names = {e["path"]: e for e in detail["entries"]}
        assert names["work/link-etc"]["type"] == "symlink"
        assert names["work/link-etc"]["target"] == "/etc"
        assert names["work/fifo"]["type"] == "fifo"
        assert "work/node_modules" not in names and "work/run.log" not in names

        # The path a lost host takes: a new devserver in another region, from the latest backup.
        status, restored = await f.api.call(
            "POST", "/v1/environments/keep/restore", {"to": {"name": "again", "region": "south"}}
        )
        assert status == 200, restored
        assert restored["backup"]["id"] == second["id"]
        again = await f.api.wait_state(restored["environmentId"], {"running", "failed"}, 600)
        assert again["state"] == "running", again
        assert again["region"] == "south"
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        got = json.loads(await ssh_ok(paths, "again", python(MANIFEST, "work")))
        expected = json.loads(await ssh_ok(paths, "keep", python(MANIFEST, "work")))
        for left_out in ("node_modules", "node_modules/x", "node_modules/x/i.js", "run.log"):
            del expected[left_out]
        assert len(got) >= FILES
        # Every file's type, mode, mtime, owner and SHA-256; every link's target.
        differing = sorted(p for p in expected.keys() | got.keys() if expected.get(p) != got.get(p))
        assert differing == [], [(p, expected.get(p), got.get(p)) for p in differing[:3]]
        for left_out in (".cache/pip/c", "scratch", "work/run.log", "work/node_modules"):
            code, _, _ = await run_ssh(paths, "again", f"test -e {left_out}")
            assert code != 0, f"{left_out} was backed up"

        # The repository is sound, and out of every environment's reach (the home is all
        # an environment sees of its host: tests/sandbox).
        repo = await repository_of(f, env["id"])
        await restic.check(restic.Repository(repo.location, repo.password))
        assert not repo.location.startswith(str(config.provider.data_dir))


async def repository_of(f: Any, env_id: str) -> BackupRepositoryRow:
    async with f.fleet.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
        assert row is not None and row.backup_repository is not None
        repo = await session.get(BackupRepositoryRow, row.backup_repository)
        assert repo is not None
        return repo


async def test_move_to_another_flavor_and_region_hands_the_name_over(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 3600
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST",
            "/v1/environments",
            {"kind": "devserver", "flavor": "tiny", "name": "mover", "region": "north"},
        )
        await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        await ssh_ok(paths, "mover", "mkdir work && " + python(GENERATE, "work", 200, 1 << 20))
        before = await ssh_ok(paths, "mover", python(MANIFEST, "work"))

        # Refused with a sentence, nothing started: the same shape, an unknown region.
        status, body = await f.api.call(
            "POST", "/v1/environments/mover/move", {"flavor": "tiny", "region": "north"}
        )
        assert status == 422 and "already" in body["error"]["message"], body
        status, body = await f.api.call("POST", "/v1/environments/mover/move", {"region": "mars"})
        assert status == 422 and "mars" in body["error"]["message"], body

        # An SSH session open on it through the move: it lasts until the new devserver
        # answers and has the name; only the old one's deletion ends it.
        session = await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            str(paths.ssh_config),
            "-o",
            "BatchMode=yes",
            "mover",
            "echo open; exec sleep 600",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert session.stdout is not None
        assert (await session.stdout.readline()).strip() == b"open"
        status, move = await f.api.call(
            "POST", "/v1/environments/mover/move", {"flavor": "small", "region": "south"}
        )
        assert status == 202, move
        assert move["environment"] == "mover"
        stages: list[str] = []
        messages: list[str] = []

        async def finished() -> dict[str, Any] | None:
            _, now = await f.api.call("GET", f"/v1/moves/{move['id']}")
            if now["stage"] in ("creating", "starting"):
                assert session.returncode is None, "the session ended before the hand-over"
            if not stages or stages[-1] != now["stage"]:
                stages.append(now["stage"])
            _, old = await f.api.call("GET", f"/v1/environments/{env['id']}")
            if old["statusMessage"] not in messages:
                messages.append(old["statusMessage"])
            return now if now["state"] != "running" else None

        done = await until(finished, "the move", timeout=600)
        assert done["state"] == "done", done
        assert "starting" in stages, stages
        await asyncio.wait_for(session.wait(), 60)  # the old one is gone: so is its session
        # The owner was told as it went (the old devserver's status, hence its events).
        assert any("moving to south" in m for m in messages), messages
        _, old = await f.api.call("GET", f"/v1/environments/{env['id']}")
        assert old["state"] == "deleted" and old["movedTo"] == done["targetId"]
        _, new = await f.api.call("GET", "/v1/environments/mover")
        assert (new["id"], new["flavor"], new["region"]) == (done["targetId"], "small", "south")
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        assert await ssh_ok(paths, "mover", python(MANIFEST, "work")) == before
        # The repository went along: the new devserver's backups are the old one's.
        _, listing = await f.api.call("GET", "/v1/environments/mover/backups")
        assert [b["trigger"] for b in listing["backups"]] == ["move"]


async def test_hostile_homes_and_other_peoples_backups(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 3600
    async with start_fleet(config) as f:
        bob = await f.user("bob")
        for api, name in ((f.api, "mine"), (bob, "theirs")):
            status, env = await api.call(
                "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": name}
            )
            assert status == 202, env
            await api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        # A link to the host's /etc, a FIFO, a 2 GiB sparse file, a file that vanishes.
        await ssh_ok(
            paths,
            "mine",
            f"ln -s /etc hostetc && mkfifo pipe && truncate -s {SPARSE} sparse && "
            "echo secret > gone && (sleep 0.3; rm -f gone) & true",
        )
        mine = await backed_up(f.api, "mine")
        assert mine["totalBytes"] >= (2 << 30 if FULL else 256 << 20)
        assert mine["dataAdded"] < 64 << 20, "the sparse file's zeros were stored as data"
        _, detail = await f.api.call("GET", f"/v1/environments/mine/backups/{mine['id']}")
        entries = {e["path"]: e for e in detail["entries"]}
        assert entries["hostetc"]["type"] == "symlink"
        assert entries["pipe"]["type"] == "fifo"
        status, body = await f.api.call(
            "GET", f"/v1/environments/mine/backups/{mine['id']}?path=hostetc"
        )
        assert status in (200, 404), body
        if status == 200:
            assert [e["path"] for e in body["entries"]] == ["hostetc"], "it followed the link"

        theirs = await backed_up(bob, "theirs")
        # From inside: the backup store (every repository, bob's too) is not there to read.
        store = config.backup_store
        code, out, err = await run_ssh(paths, "mine", f"ls -a {store}; cat {store}/*/config")
        assert code != 0 and "r-" not in out, (out, err)
        # Bob's backup named through alice's devserver, and bob's devserver itself: not found.
        status, body = await f.api.call("GET", f"/v1/environments/mine/backups/{theirs['id']}")
        assert status == 404 and "leeward backup list" in body["error"]["message"], body
        status, body = await f.api.call(
            "POST",
            "/v1/environments/mine/restore",
            {"backup": theirs["id"], "paths": ["x"]},
        )
        assert status == 404, body
        status, body = await f.api.call("GET", "/v1/environments/theirs/backups")
        assert status == 404, body
        # Paths that leave the home, and requests that are not one thing.
        for bad in (
            {"backup": mine["id"], "paths": ["../etc/passwd"]},
            {"backup": mine["id"], "paths": ["/etc/passwd"]},
            {"backup": mine["id"]},
            {"backup": mine["id"], "paths": ["x"], "to": {"name": "n"}},
            {"backup": "one", "paths": ["x"]},
        ):
            status, body = await f.api.call("POST", "/v1/environments/mine/restore", bad)
            assert status == 422 and body["error"]["message"], (bad, body)

        # A path restored into the devserver, next to what is there, never over it.
        await ssh_ok(paths, "mine", "rm hostetc && echo new > gone")
        status, done = await f.api.call(
            "POST", "/v1/environments/mine/restore", {"backup": mine["id"], "paths": ["hostetc"]}
        )
        assert status == 200, done
        link = await ssh_ok(paths, "mine", f"readlink ~/{done['destination']}/hostetc")
        assert link.strip() == "/etc"


@pytest.mark.parametrize(
    "restart",
    [
        pytest.param(False, marks=pytest.mark.skipif(not FULL, reason="full form only")),
        True,
    ],
    ids=["straight", "fleet-restarted"],
)
async def test_decommission_moves_every_devserver_off_then_retires_the_host(
    start_fleet, config_factory, sqlite_url, tmp_path: Path, restart: bool
):
    """One host per region: no room for a live move, so each devserver moves cold (a final
    backup, restored on the other region's host) with its files."""
    config = config_factory(sqlite_url, hosts=1)
    config.backup.check_seconds = 0.5
    config.backup.interval_minutes = 24 * 60
    names = ["dc-a", "dc-b", "dc-c"]
    async with start_fleet(config) as f:
        for name in names:
            status, env = await f.api.call(
                "POST",
                "/v1/environments",
                {"kind": "devserver", "flavor": "tiny", "name": name, "region": "north"},
            )
            assert status == 202, env
        for name in names:
            await f.api.wait_state(name, {"running"}, 120)
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        for name in names:
            await ssh_ok(paths, name, f"echo {name} > mark")
        status, body = await f.admin.call(
            "POST", "/v1/admin/hosts/north-h1/decommission", {"by": "2000-01-01T00:00:00Z"}
        )
        assert status == 422 and "future" in body["error"]["message"], body
        by = "2999-01-01T00:00:00Z"
        status, detail = await f.admin.call(
            "POST", "/v1/admin/hosts/north-h1/decommission", {"by": by, "reason": "disk swap"}
        )
        assert status == 202, detail
        assert detail["host"]["state"] == "decommissioning"
        for env in detail["environments"]:
            assert "retired by 2999-01-01" in env["statusMessage"], env
        if not restart:
            await _retired_with_files(f, tmp_path, names)
            return

        async def one_moving() -> bool:
            _, now = await f.admin.call("GET", "/v1/admin/hosts/north-h1")
            return any(m["state"] == "running" for m in now["moves"])

        await until(one_moving, "a move under way", timeout=120)
    # The fleet stopped half-way (its agents too); another one, on the same store, goes on.
    async with start_fleet(config) as f:
        await _retired_with_files(f, tmp_path, names)


async def _retired_with_files(f: Any, tmp_path: Path, names: list[str]) -> None:
    async def retired() -> dict[str, Any] | None:
        _, now = await f.admin.call("GET", "/v1/admin/hosts/north-h1")
        return now if now["host"]["state"] == "retired" else None

    final = await until(retired, "north-h1 retired", timeout=900)
    assert {m["state"] for m in final["moves"]} == {"done"}, final["moves"]
    paths = await ssh_access(f.api, tmp_path / "client", "alice")
    _, listing = await f.api.call("GET", "/v1/environments")
    listed = [(e["name"], e["state"], e["region"]) for e in listing["environments"]]
    assert sorted(listed) == [(name, "running", "south") for name in names], listed
    for name in names:
        _, env = await f.api.call("GET", f"/v1/environments/{name}")
        assert env["region"] == "south" and env["state"] == "running", env

        # After a restart, an agent the old fleet stopped is started again once its lease
        # (the stopped replica's) has run out.
        async def marked(name: str = name) -> str | None:
            code, out, _ = await run_ssh(paths, name, "cat mark")
            return out.strip() if code == 0 else None

        assert await until(marked, f"{name} answers", timeout=120) == name
    status, body = await f.api.call(
        "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "region": "north"}
    )
    assert status in (409, 503), body  # nothing is placed on a retired host


async def test_schedule_overdue_status_and_metrics_with_a_manual_clock(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    clock = ManualClock(datetime.now(UTC))
    config = config_factory(sqlite_url)
    config.backup.interval_minutes = 60
    async with start_fleet(config, clock=clock, background=False) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "sched"}
        )
        await f.api.wait_state(env["id"], {"running"})

        async def settled() -> dict[str, Any] | None:
            _, listing = await f.api.call("GET", "/v1/environments/sched/backups")
            return None if listing["status"]["running"] else listing

        # Never backed up: due at once; then not again until its interval has passed.
        assert await backups.scheduled(f.fleet) == 1
        listing = await until(settled, "the first scheduled backup")
        assert [(b["trigger"], b["state"]) for b in listing["backups"]] == [
            ("schedule", "succeeded")
        ]
        assert await backups.scheduled(f.fleet) == 0
        clock.advance(timedelta(minutes=59))
        assert await backups.scheduled(f.fleet) == 0
        clock.advance(timedelta(minutes=2))
        assert await backups.scheduled(f.fleet) == 1
        await until(settled, "the second scheduled backup")

        # The owner's own schedule; then a backup store that refuses: failures, then overdue.
        status, body = await f.api.call(
            "PUT", "/v1/environments/sched/backup-schedule", {"intervalMinutes": 15}
        )
        assert status == 200 and body["intervalMinutes"] == 15, body
        status, body = await f.api.call(
            "PUT", "/v1/environments/sched/backup-schedule", {"intervalMinutes": 1}
        )
        assert status == 422, body
        repo = await repository_of(f, env["id"])
        async with f.fleet.store.write() as session:
            row = await session.get(BackupRepositoryRow, repo.id)
            assert row is not None
            row.password = "not-the-key-any-more"
        clock.advance(timedelta(minutes=16))
        for _ in range(3):
            assert await backups.scheduled(f.fleet) == 1
            listing = await until(settled, "a failing backup")
            assert listing["backups"][0]["state"] == "failed"
            assert "key" in listing["backups"][0]["message"], listing["backups"][0]
            # Tried again after a quarter of its interval, not at every round.
            assert await backups.scheduled(f.fleet) == 0
            clock.advance(timedelta(minutes=4))
        _, shown = await f.api.call("GET", "/v1/environments/sched")
        assert shown["backup"]["overdue"] is False, shown["backup"]  # 28 minutes: not yet
        clock.advance(timedelta(minutes=3))  # two intervals (30 minutes) without success
        assert await backups.scheduled(f.fleet) == 1
        await until(settled, "the fourth failing backup")
        _, shown = await f.api.call("GET", "/v1/environments/sched")
        assert shown["backup"]["overdue"] is True, shown["backup"]
        assert "key" in shown["backup"]["message"]
        status, text = await f.api.call("GET", "/metrics")
        assert 'leeward_backup_overdue{environment="sched",owner="alice",region=' in text
        line = next(x for x in text.splitlines() if x.startswith("leeward_backup_overdue{"))
        assert line.endswith(" 1.0"), line
        assert 'leeward_backup_runs{state="failed"} 4.0' in text


async def test_a_backup_cut_short_leaves_the_repository_sound(
    start_fleet, config_factory, sqlite_url, tmp_path: Path
):
    """A backup cut short, twice: the fleet's work on it stops (as when the fleet dies; restic
    dies with it), then restic itself is killed -9. Each run ends failed with its reason,
    restic finds the repository sound, and the next backup succeeds."""
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 0.5
    config.backup.interval_minutes = 24 * 60
    config.lease_seconds = 2
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "cut"}
        )
        await f.api.wait_state(env["id"], {"running"})
        paths = await ssh_access(f.api, tmp_path / "client", "alice")
        await backed_up(f.api, "cut")
        await ssh_ok(paths, "cut", f"head -c {CUT_BYTES} /dev/urandom > big")
        repo = await repository_of(f, env["id"])

        async def restic_backing_up() -> int | None:
            found = await asyncio.create_subprocess_exec(
                "pgrep", "-f", f"restic .*{repo.id}.* backup", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await found.communicate()
            pids = [int(p) for p in out.split()]
            return pids[-1] if pids else None

        async def ended(backup_id: int) -> dict[str, Any]:
            async def probe() -> dict[str, Any] | None:
                _, listing = await f.api.call("GET", "/v1/environments/cut/backups")
                row = next(b for b in listing["backups"] if b["id"] == backup_id)
                return row if row["state"] != "running" else None

            result: dict[str, Any] = await until(probe, f"backup {backup_id} ended")
            return result

        # The fleet's work stops: the task is cancelled, restic is stopped with it.
        status, started = await f.api.call("POST", "/v1/environments/cut/backups")
        assert status == 202, started
        await until(restic_backing_up, "restic backing up")
        task = f.fleet.at_work(f"backup:{repo.id}")
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await until(restic_backing_up, "restic gone", expected=None) is None
        cut = await ended(started["id"])
        assert cut["state"] == "failed" and "Interrupted" in cut["message"], cut
        await restic.check(restic.Repository(repo.location, repo.password))

        # restic killed -9 in the middle (the host's trouble): failed, with restic's reason.
        status, started = await f.api.call("POST", "/v1/environments/cut/backups")
        assert status == 202, started
        pid = await until(restic_backing_up, "restic backing up again")
        os.kill(pid, signal.SIGKILL)
        killed = await ended(started["id"])
        assert killed["state"] == "failed" and "signal" in killed["message"], killed
        await restic.check(restic.Repository(repo.location, repo.password))

        again = await backed_up(f.api, "cut")
        assert again["totalBytes"] >= CUT_BYTES


async def test_retention_forgets_what_the_policy_does_not_keep(
    start_fleet, config_factory, sqlite_url
):
    config = config_factory(sqlite_url)
    config.backup.check_seconds = 3600
    config.backup.prune_hours = 1e-6  # after every backup
    config.backup.retention.keep_last = 2
    config.backup.retention.keep_hourly = 0
    config.backup.retention.keep_daily = 0
    config.backup.retention.keep_weekly = 0
    async with start_fleet(config) as f:
        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "kept"}
        )
        await f.api.wait_state(env["id"], {"running"})
        taken = [(await backed_up(f.api, "kept"))["id"] for _ in range(3)]
        repo = await repository_of(f, env["id"])
        await f.fleet.idle()  # the prune after the last backup

        async def listed() -> list[int] | None:
            _, listing = await f.api.call("GET", "/v1/environments/kept/backups")
            ids = [b["id"] for b in listing["backups"]]
            return ids if len(ids) == 2 else None

        assert await until(listed, "the oldest forgotten") == taken[:0:-1]
        snapshots = await restic.snapshots(restic.Repository(repo.location, repo.password))
        assert len(snapshots) == 2
        await restic.check(restic.Repository(repo.location, repo.password))
        status, body = await f.api.call("GET", f"/v1/environments/kept/backups/{taken[0]}")
        assert status == 404, body
