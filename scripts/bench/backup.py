"""Backups of a devserver's home through the fleet (restic), side by side in one run with
`tar | zstd` and `rsync` of the same home to a directory next to the backup store; and what a
backup costs an interactive `ssh` on the devserver it backs up.

A real fleet in this process (SQLite, two regions, the local provider: real agents, in their
sandboxes where the machine allows), the real OpenSSH client with the config `config-ssh`
writes, and restic as the fleet runs it. One devserver's home gets `--files` files of random
content, `--mib` MiB in all (tests/fleet/test_backups.py's GENERATE, over ssh). Then:
- the first backup (POST to succeeded, restic's `dataAdded` and `totalBytes`), then
  `tar -C home -cf - . | zstd -T0 -3` and `rsync -a --delete home/ store/rsync-copy/`;
- 1 % of the files changed (the test's CHANGE, over ssh); the incremental backup, tar | zstd
  again (it has no incremental: the full once more), rsync's second run;
- a restore into a new devserver in the other region (POST restore to the new devserver
  `running`), and `restic restore` alone of the same snapshot (the fleet's own arguments,
  `--verify`), to tell restic's throughput from provisioning;
- `ssh ENV true` (a new connection each, no ControlMaster) on a second devserver with a home
  of the same size: `--samples` times without a backup (half before, half after) and as many
  times as fit while its first backup runs; p50 / p99 and the ratios.

Usage: scripts/bench/backup [--quick] [--samples 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from allocate import pct  # noqa: E402
from tests.conftest import Api, make_user, run_ssh, small_config, ssh_access  # noqa: E402
from tests.fleet.test_backups import CHANGE, GENERATE, python  # noqa: E402

from leeward.fleet.main import running_fleet  # noqa: E402
from leeward.fleet.runtime import Fleet  # noqa: E402
from leeward.fleet.store.models import BackupRepositoryRow, EnvironmentRow  # noqa: E402
from leeward_protocol.fleet import Role  # noqa: E402

MiB = 1 << 20
POLL = 0.05
"""How often a backup's or an environment's state is asked for (seconds)."""
LONG = 1800.0
"""The most any one step may take (seconds)."""


class Restores(logging.Handler):
    """The fleet's own log line for a home restored (restic's part of a restore, in seconds)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("environment %s: home restored") and record.args:
            self.seconds.append(float(record.args[-1]))  # type: ignore[index]


@contextlib.asynccontextmanager
async def fleet(tmp: Path, http: aiohttp.ClientSession) -> AsyncIterator[tuple[Api, Fleet, Any]]:
    config = small_config(tmp, f"sqlite+aiosqlite:///{tmp / 'fleet.db'}", regions=2)
    config.provider.stop_agents_on_exit = True
    config.backup.check_seconds = 3600  # no scheduled backup: this benchmark takes its own
    async with running_fleet(config) as (url, running):
        api = Api(url, http, await make_user(running, "alice"))
        await make_user(running, "root-admin", Role.ADMIN)
        yield api, running, config
        await asyncio.wait_for(running.idle(), 120)


def cpu() -> float:
    """CPU seconds (user and system) of this process's children ended so far: restic's runs
    (the fleet runs them from this process), tar and zstd, rsync."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def poll(api: Api, path: str, done: Any, what: str, within: float = LONG) -> Any:
    deadline = time.monotonic() + within
    while True:
        status, body = await api.call("GET", path)
        if status == 200 and (found := done(body)) is not None:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {within:.0f} s (last: {status} {body})")
        await asyncio.sleep(POLL)


async def devserver(api: Api, name: str, region: str) -> str:
    body = {"kind": "devserver", "flavor": "tiny", "name": name, "region": region}
    status, env = await api.call("POST", "/v1/environments", body)
    if status != 202:
        raise SystemExit(f"creating {name}: {status} {env}")
    await poll(
        api,
        f"/v1/environments/{env['id']}",
        lambda e: e if e["state"] == "running" else None,
        f"{name} running",
        120,
    )
    return str(env["id"])


async def ssh_ok(paths: Any, alias: str, command: str) -> str:
    code, out, err = await run_ssh(paths, alias, command, timeout=LONG)
    if code != 0:
        raise SystemExit(f"ssh {alias} {command[:60]}...: {code} {err[-300:]}")
    return out


async def start_backup(api: Api, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    status, body = await api.call("POST", f"/v1/environments/{name}/backups")
    if status != 202:
        raise SystemExit(f"backing up {name}: {status} {body}")
    return int(body["id"]), started


async def finished_backup(api: Api, name: str, backup: int) -> dict[str, Any]:
    def done(listing: dict[str, Any]) -> dict[str, Any] | None:
        row = next(b for b in listing["backups"] if b["id"] == backup)
        return None if row["state"] == "running" else row

    row: dict[str, Any] = await poll(
        api, f"/v1/environments/{name}/backups", done, f"backup {backup}"
    )
    if row["state"] != "succeeded":
        raise SystemExit(f"backup {backup} of {name}: {row['state']}: {row['message']}")
    return row


async def settled() -> None:
    """Dirty pages written out before a step is timed (`sync`, not in any figure): each step
    pays for its own writes, not for the one's before it."""
    await asyncio.to_thread(os.sync)


async def backed_up(api: Api, running: Fleet, name: str) -> dict[str, Any]:
    await settled()
    before = cpu()
    backup, started = await start_backup(api, name)
    row = await finished_backup(api, name, backup)
    seconds = time.perf_counter() - started
    used = cpu() - before
    await asyncio.wait_for(running.idle(), LONG)  # the prune after it, not in the next figure
    return {
        "seconds": round(seconds, 2),
        "restic_seconds": round(row["seconds"], 2),
        "cpu_seconds": round(used, 2),
        "data_added_bytes": row["dataAdded"],
        "total_bytes": row["totalBytes"],
        "total_files": row["totalFiles"],
        "files_new": row["filesNew"],
        "files_changed": row["filesChanged"],
        "snapshot": row["snapshot"],
    }


def size_of(directory: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def timed(argv: list[str], **kw: Any) -> tuple[float, str]:
    seconds, _, out = timed_cpu(argv, **kw)
    return seconds, out


def timed_cpu(argv: list[str], **kw: Any) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the command and its children), stdout."""
    before, started = cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LONG, check=False, **kw)
    elapsed, used = time.perf_counter() - started, cpu() - before
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed, used, done.stdout


def tar_zstd(home: Path, out: Path) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    pipeline = f"tar -C '{home}' -cf - . | zstd -q -T0 -3 -o '{out}'"
    seconds, used, _ = timed_cpu(["bash", "-o", "pipefail", "-c", pipeline])
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(used, 2),
        "output_bytes": out.stat().st_size,
    }


def rsync(home: Path, copy: Path) -> dict[str, Any]:
    seconds, used, out = timed_cpu(["rsync", "-a", "--delete", "--stats", f"{home}/", f"{copy}/"])
    sent = re.search(r"Total bytes sent: ([\d,.]+)", out)
    literal = re.search(r"Literal data: ([\d,.]+)", out)
    assert sent is not None and literal is not None, out
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(used, 2),
        "bytes_sent": int(re.sub(r"[,.]", "", sent.group(1))),
        "literal_bytes": int(re.sub(r"[,.]", "", literal.group(1))),
    }


def restic_restore(location: str, password: str, snapshot: str, target: Path) -> dict[str, Any]:
    """`restic restore` alone, as the fleet runs it (leeward.providers.restic.restore)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = password
    argv = ["restic", f"--repo={location}", "--no-cache", "restore", "--verify"]
    seconds, used, _ = timed_cpu([*argv, f"--target={target}", "--", snapshot], env=env)
    size = size_of(target)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(used, 2),
        "bytes": size,
        "mib_per_s": round(size / MiB / seconds),
    }


def restic_fixed_costs(location: str, password: str, tmp: Path) -> dict[str, Any]:
    """What every restic command pays before its work, measured alone: opening the repository
    (its key derived from the password: `restic cat config`, p50 of 3), and making one
    (`restic init`, which calibrates the key derivation), as the first backup does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = password
    opened = [
        timed(["restic", f"--repo={location}", "--no-cache", "cat", "config"], env=env)[0]
        for _ in range(3)
    ]
    fresh = tmp / "fresh-repository"
    init, _ = timed(["restic", f"--repo={fresh}", "--no-cache", "init"], env=env)
    shutil.rmtree(fresh)
    return {"open_seconds_p50": round(pct(opened, 50), 2), "init_seconds": round(init, 2)}


async def repository(running: Fleet, env_id: str) -> BackupRepositoryRow:
    async with running.store.read() as session:
        row = await session.get(EnvironmentRow, env_id)
        assert row is not None and row.backup_repository is not None
        repo = await session.get(BackupRepositoryRow, row.backup_repository)
        assert repo is not None
        return repo


def ssh_true(paths: Any, alias: str) -> tuple[float, float]:
    """One `ssh ALIAS true`, a new connection (the generated config has no ControlMaster):
    when it started and ended (monotonic seconds)."""
    argv = ["ssh", "-F", str(paths.ssh_config), "-o", "BatchMode=yes"]
    argv += ["-o", "ConnectTimeout=10", alias, "true"]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    ended = time.monotonic()
    if done.returncode != 0:
        raise SystemExit(f"ssh {alias} true: {done.returncode} {done.stderr.decode()[-300:]}")
    return started, ended


async def idle_samples(paths: Any, alias: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started, ended = await asyncio.to_thread(ssh_true, paths, alias)
        times.append((ended - started) * 1000)
    return times


async def busy_samples(
    api: Api, running: Fleet, paths: Any, alias: str, cap: int
) -> tuple[list[float], dict[str, Any]]:
    """`ssh ALIAS true` one after another while ALIAS's first backup runs; a sample that ended
    after the backup may have (one poll's time before it was seen done) is not counted."""
    backup, started = await start_backup(api, alias)
    watcher = asyncio.create_task(finished_backup(api, alias, backup))
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + LONG
    while not watcher.done() and len(samples) < cap and time.monotonic() < deadline:
        samples.append(await asyncio.to_thread(ssh_true, paths, alias))
    row = await watcher
    ended = time.monotonic()
    seconds = time.perf_counter() - started
    await asyncio.wait_for(running.idle(), LONG)
    times = [(e - s) * 1000 for s, e in samples if e < ended - 2 * POLL - 0.1]
    return times, {"seconds": round(seconds, 2), "total_bytes": row["totalBytes"]}


def figures(times: list[float]) -> dict[str, Any]:
    if not times:
        raise SystemExit("no ssh sample fit in the backup: make the home larger (--mib)")
    return {"n": len(times), "p50_ms": round(pct(times, 50), 1), "p99_ms": round(pct(times, 99), 1)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    files, size = (1_000, 100 * MiB) if args.quick else (args.files, args.mib * MiB)
    tmp = Path(tempfile.mkdtemp(prefix="leeward-bench-backup-"))
    restores = Restores()
    backups_log = logging.getLogger("leeward.fleet.backups")
    backups_log.setLevel(logging.INFO)
    backups_log.addHandler(restores)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}",
        "restic": (await asyncio.to_thread(timed, ["restic", "version"]))[1].strip(),
        "home": {"files": files, "bytes_asked": size},
    }
    run_started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http, fleet(tmp, http) as (api, running, config):
            assert config.provider.data_dir is not None
            results["isolation"] = running.provider.isolation
            keep = await devserver(api, "keep", "north")
            paths = await ssh_access(api, tmp / "client", "alice")
            started = time.perf_counter()
            await ssh_ok(paths, "keep", "mkdir work && " + python(GENERATE, "work", files, size))
            results["home"]["generate_seconds"] = round(time.perf_counter() - started, 2)
            home = config.provider.data_dir / keep / "home"
            results["home"]["bytes_on_host"] = size_of(home)
            store = config.provider.data_dir.parent / "baselines"  # beside `backups/`
            store.mkdir()
            archive, copy = store / "out.tar.zst", store / "rsync-copy"

            first = await backed_up(api, running, "keep")
            repo = await repository(running, keep)
            repo_after_first = size_of(Path(repo.location))
            await settled()
            tar_first = await asyncio.to_thread(tar_zstd, home, archive)
            await settled()
            rsync_first = await asyncio.to_thread(rsync, home, copy)

            changed = int(await ssh_ok(paths, "keep", python(CHANGE, "work", files)))
            second = await backed_up(api, running, "keep")
            repo_growth = size_of(Path(repo.location)) - repo_after_first
            await settled()
            tar_second = await asyncio.to_thread(tar_zstd, home, archive)
            await settled()
            rsync_second = await asyncio.to_thread(rsync, home, copy)
            archive.unlink()
            shutil.rmtree(copy)
            results["first"] = {
                "restic_via_fleet": {**first, "repository_bytes": repo_after_first},
                "tar_zstd": tar_first,
                "rsync": rsync_first,
            }
            results["incremental"] = {
                "files_changed": changed,
                "restic_via_fleet": {**second, "repository_growth_bytes": repo_growth},
                "tar_zstd_full_again": tar_second,
                "rsync_second_run": rsync_second,
            }

            # Restore: into a new devserver in the other region, then restic alone.
            await settled()
            started = time.perf_counter()
            to = {"to": {"name": "again", "region": "south"}}
            status, restored = await api.call("POST", "/v1/environments/keep/restore", to)
            if status != 200:
                raise SystemExit(f"restore: {status} {restored}")
            again = await poll(
                api,
                f"/v1/environments/{restored['environmentId']}",
                lambda e: e if e["state"] in ("running", "failed") else None,
                "the restored devserver",
            )
            fleet_seconds = time.perf_counter() - started
            if again["state"] != "running":
                raise SystemExit(f"restore failed: {again['statusMessage']}")
            paths = await ssh_access(api, tmp / "client", "alice")
            count = await ssh_ok(paths, "again", "find work -type f | wc -l")
            target = tmp / "restic-restore"
            await settled()
            alone = await asyncio.to_thread(
                restic_restore, repo.location, repo.password, second["snapshot"], target
            )
            shutil.rmtree(target)
            results["restic_fixed_costs"] = await asyncio.to_thread(
                restic_fixed_costs, repo.location, repo.password, tmp
            )
            restored_bytes = second["total_bytes"]
            results["restore"] = {
                "snapshot_total_bytes": restored_bytes,
                "files_in_restored_home": int(count),
                "via_fleet": {
                    "post_to_running_seconds": round(fleet_seconds, 2),
                    "mib_per_s": round(restored_bytes / MiB / fleet_seconds),
                    "restic_part_seconds": restores.seconds[-1] if restores.seconds else None,
                },
                "restic_restore_alone": alone,
            }

            # ssh on a devserver while its first backup runs, against without one.
            await devserver(api, "busy", "north")
            paths = await ssh_access(api, tmp / "client", "alice")
            await ssh_ok(paths, "busy", "mkdir work && " + python(GENERATE, "work", files, size))
            await settled()
            before = await idle_samples(paths, "busy", args.samples // 2)
            during, busy_backup = await busy_samples(api, running, paths, "busy", 20 * args.samples)
            await settled()
            after = await idle_samples(paths, "busy", args.samples - args.samples // 2)
            without = figures(before + after)
            with_backup = figures(during)
            results["ssh_true"] = {
                "without_backup": {**without, "before": figures(before), "after": figures(after)},
                "during_first_backup": with_backup,
                "backup": busy_backup,
                "p50_ratio": round(with_backup["p50_ms"] / without["p50_ms"], 2),
                "p99_ratio": round(with_backup["p99_ms"] / without["p99_ms"], 2),
            }
    finally:
        backups_log.removeHandler(restores)
        shutil.rmtree(tmp, ignore_errors=True)

    first_r, incr_r = results["first"], results["incremental"]
    results["ratios"] = {
        "restic_first_over_tar_zstd_seconds": ratio(
            first_r["restic_via_fleet"]["seconds"], first_r["tar_zstd"]["seconds"]
        ),
        "restic_first_over_tar_zstd_bytes": ratio(
            first_r["restic_via_fleet"]["data_added_bytes"], first_r["tar_zstd"]["output_bytes"]
        ),
        "restic_first_over_tar_zstd_cpu_seconds": ratio(
            first_r["restic_via_fleet"]["cpu_seconds"], first_r["tar_zstd"]["cpu_seconds"]
        ),
        "restic_first_over_rsync_first_seconds": ratio(
            first_r["restic_via_fleet"]["seconds"], first_r["rsync"]["seconds"]
        ),
        "restic_incremental_over_rsync_second_seconds": ratio(
            incr_r["restic_via_fleet"]["seconds"], incr_r["rsync_second_run"]["seconds"]
        ),
        "restic_incremental_over_rsync_second_bytes": ratio(
            incr_r["restic_via_fleet"]["data_added_bytes"],
            incr_r["rsync_second_run"]["bytes_sent"],
        ),
        "restic_incremental_over_tar_zstd_again_seconds": ratio(
            incr_r["restic_via_fleet"]["seconds"], incr_r["tar_zstd_full_again"]["seconds"]
        ),
        "restore_fleet_over_restic_alone_seconds": ratio(
            results["restore"]["via_fleet"]["post_to_running_seconds"],
            results["restore"]["restic_restore_alone"]["seconds"],
        ),
    }
    results["run_seconds"] = round(time.monotonic() - run_started)
    return results


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files, 100 MiB")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=40, help="ssh samples without a backup")
    print(json.dumps(asyncio.run(bench(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
