"""The sandbox on its own, without a fleet: started as the owner's uid and joined, found again
by a new starter, stopped with everything in its groups (even when its record is lost), the
owners' uids, and file work done as the owner."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeward.sandbox import images
from leeward.sandbox import sandbox as sb
from leeward.sandbox.cgroups import Cgroups, Limits
from leeward.sandbox.owners import OwnerError, as_owner_executor, host_uid

pytestmark = pytest.mark.skipif(
    not sb.probe().ok, reason=f"this machine makes no sandboxes: {sb.probe().reason}"
)
UID = 2_999_001  # above the owners' registry's usual range, so it is nobody's here
FORKS = """
import os, signal
kids = []
try:
    for _ in range(80):
        pid = os.fork()
        if pid == 0:
            signal.pause()
        kids.append(pid)
    print("80 forks")
except OSError as exc:
    print("refused after", len(kids), exc.errno)
for kid in kids:
    os.kill(kid, signal.SIGKILL)
"""


@pytest.fixture
def spec(tmp_path: Path) -> sb.SandboxSpec:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    image = images.ensure(images.DEFAULT_IMAGE)
    return sb.SandboxSpec(
        environment_id=f"e-t{os.getpid()}{tmp_path.name[-6:]}".replace("_", "")[:40],
        hostname="unit",
        rootfs=image.rootfs,
        home=state / "home",
        owner="carol",
        uid=UID,
        state_dir=state,
        limits=Limits(cpus=1, memory_bytes=1 << 30, pids=64),
    )


def inside(running: sb.Running, script: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": f"/home/{running.owner}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        running.command(["/bin/sh", "-c", script]), env=env, capture_output=True, text=True
    )


def test_a_sandbox_is_found_again_and_stopped_with_all_it_holds(spec: sb.SandboxSpec) -> None:
    cgroups = Cgroups.detect()
    running = sb.ensure(spec, cgroups)
    try:
        done = inside(running, "id -u; hostname; pwd; nohup sleep 6121 >/dev/null 2>&1 & echo")
        assert done.stdout.split() == [str(UID), "unit", "/home/carol"], done.stderr
        assert sb.find(spec) == running, "a new starter finds the same sandbox"
        assert sb.ensure(spec, cgroups) == running, "and does not start another"
        home = spec.home.stat()
        assert (home.st_uid, home.st_gid, home.st_mode & 0o777) == (UID, UID, 0o700)
        if "pids" in cgroups.controllers:  # the limit holds inside: 64 processes at most
            done = inside(running, f"python3 -c '{FORKS}'")
            assert done.stdout.startswith("refused after "), done.stdout + done.stderr
            assert int(done.stdout.split()[2]) < 64
        # Its record lost (a crash mid-write, a wiped state directory): the stop still finds
        # what runs in the environment's groups.
        (spec.state_dir / sb.STATE_FILE).unlink()
        assert sb.find(spec) is None
    finally:
        sb.stop(spec.state_dir, cgroups, spec.environment_id)
    assert not running.alive()
    if cgroups.controllers:
        for group in cgroups.controllers.values():
            assert not (group / "leeward" / spec.environment_id).exists()
    assert not any(
        b"sleep 6121" in Path(f"/proc/{p}/cmdline").read_bytes()
        for p in os.listdir("/proc")
        if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline")
    )


def test_another_owner_gets_a_new_sandbox(spec: sb.SandboxSpec) -> None:
    cgroups = Cgroups.detect()
    first = sb.ensure(spec, cgroups)
    try:
        other = sb.SandboxSpec(**{**spec.__dict__, "owner": "dave", "uid": UID + 1})
        assert sb.find(other) is None, "a sandbox is its owner's only"
        second = sb.ensure(other, cgroups)
        assert second.pid != first.pid and not first.alive()
        assert inside(second, "id -un; ls -n /home").stdout.split()[0] == "dave"
    finally:
        sb.stop(spec.state_dir, cgroups, spec.environment_id)


def test_owners_get_their_own_uids_once_across_processes(tmp_path: Path) -> None:
    registry = tmp_path / "owners.json"
    script = (
        "import sys; from pathlib import Path; from leeward.sandbox.owners import host_uid;"
        "print(host_uid(Path(sys.argv[1]), sys.argv[2]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(registry), f"user{i % 4}"], stdout=subprocess.PIPE
        )
        for i in range(12)
    ]
    got: dict[str, set[int]] = {}
    for i, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=60)
        got.setdefault(f"user{i % 4}", set()).add(int(out))
    assert all(len(uids) == 1 for uids in got.values()), got
    assert len({next(iter(u)) for u in got.values()}) == 4, "one uid per owner"
    assert host_uid(registry, "user0") == next(iter(got["user0"]))
    assert json.loads(registry.read_text()) == {k: next(iter(v)) for k, v in got.items()}
    with pytest.raises(OwnerError, match="Unix user name"):
        host_uid(registry, "../root")


@pytest.fixture
def walkable() -> Iterator[Path]:
    """A directory the owner may walk into (a pytest tmp_path is under root's 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="leeward-owner-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


async def test_file_work_as_the_owner_goes_where_the_owner_may_only(walkable: Path) -> None:
    tmp_path = walkable
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, UID, UID)
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    (home / "link").symlink_to(secret)
    executor = as_owner_executor(UID, UID, workers=1)
    loop = asyncio.get_running_loop()

    def write() -> int:
        (home / "made").write_text("mine\n")
        return (home / "made").stat().st_uid

    def read_through_the_link() -> str:
        return (home / "link").read_text()

    def write_outside() -> None:
        (tmp_path / "outside").write_text("no\n")

    try:
        assert await loop.run_in_executor(executor, write) == UID
        with pytest.raises(PermissionError):
            await loop.run_in_executor(executor, read_through_the_link)
        with pytest.raises(PermissionError):
            await loop.run_in_executor(executor, write_outside)
        assert os.getuid() == 0 and secret.read_text() == "root's\n", "this thread is still root"
    finally:
        executor.shutdown()


def test_an_owner_called_root_is_still_not_root(spec: sb.SandboxSpec) -> None:
    cgroups = Cgroups.detect()
    named_root = sb.SandboxSpec(**{**spec.__dict__, "owner": "root"})
    running = sb.ensure(named_root, cgroups)
    try:
        done = inside(running, "id -u; id -un; pwd; awk -F: '$3 == 0' /etc/passwd")
        assert done.stdout.split() == [str(UID), "root", "/home/root"], done.stderr
    finally:
        sb.stop(spec.state_dir, cgroups, spec.environment_id)
