"""leeward.providers.restic with the real restic (0.14 on Debian) on repositories in tmp dirs:
round trips, what is left out, what survives a killed run, and who writes a restore."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeward.common.processes import pid_alive
from leeward.providers import restic
from leeward.providers.restic import Progress, Repository, ResticError, Retention
from tests.conftest import until

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")

OTHER = 2_999_999
"""A uid (and gid) no one has: an environment's owner, as the host allocates them."""
AS_OTHER = ["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", "--"]


def as_owner(argv: list[str]) -> list[str]:
    return [*AS_OTHER, *argv]


def identity(argv: list[str]) -> list[str]:
    return argv


PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One empty repository, copied for each test: `restic init` calibrates its key derivation
    for seconds, and test_init_is_idempotent covers `init` itself."""
    path = tmp_path_factory.mktemp("template") / "repo"
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
    subprocess.run(
        ["restic", "--repo", str(path), "init"], env=env, check=True, capture_output=True
    )
    return path


@pytest.fixture
def repo(tmp_path: Path, template: Path) -> Repository:
    shutil.copytree(template, tmp_path / "repo")
    return Repository(location=str(tmp_path / "repo"), password=PASSWORD)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory other uids may traverse (pytest's tmp dirs are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="leeward-restic-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def make_home(root: Path) -> Path:
    """A home with one of each kind of node restic keeps."""
    home = root / "home"
    (home / "sub" / "deep").mkdir(parents=True)
    (home / "notes.txt").write_text("hello\n")
    (home / "sub" / "data.bin").write_bytes(os.urandom(100_000))
    (home / "sub" / "deep" / "c").write_text("deep\n")
    (home / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (home / "run.sh").chmod(0o755)
    (home / "private").write_text("mine\n")
    (home / "private").chmod(0o600)
    (home / "etc").symlink_to("/etc")
    (home / "dangling").symlink_to("nowhere/at/all")
    os.mkfifo(home / "pipe", 0o640)
    with (home / "sparse.img").open("wb") as sparse:
        sparse.truncate(64 << 20)
    os.utime(home / "notes.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(home / "sub", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    return home


Node = tuple[int, int, int, str | None]


def tree(root: Path) -> dict[str, Node]:
    """Every node under `root` (never following links): kind, mode, mtime, and its content's
    hash, or its link's target."""
    nodes: dict[str, Node] = {}
    for top, directories, names in os.walk(root):
        for name in directories + names:
            path = os.path.join(top, name)
            status = os.lstat(path)
            content = None
            if stat.S_ISREG(status.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(status.st_mode):
                content = os.readlink(path)
            kind, mode = stat.S_IFMT(status.st_mode), stat.S_IMODE(status.st_mode)
            nodes[os.path.relpath(path, root)] = (kind, mode, status.st_mtime_ns, content)
    return nodes


def restic_children(command: bytes = b"", parent: int | None = None) -> list[int]:
    """The child processes of `parent` (this one by default) that are restic (setpriv execs
    it: it is the child itself), running `command` if given."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if int(status[1]) == parent and b"restic" in argv and (not command or command in argv):
                found.append(int(entry.name))
    return found


async def test_round_trip_keeps_every_kind_of_node(repo: Repository, tmp_path: Path) -> None:
    repo = Repository(repo.location, repo.password, cache_dir=tmp_path / "cache")
    home = make_home(tmp_path / "env")
    before = tree(home)
    seen: list[Progress] = []

    done = await restic.backup(
        repo, home, host="h1", tags=["env:e-1"], excludes=[], on_progress=seen.append
    )

    assert len(done.snapshot) == 64 and done.warnings == []
    assert done.total_files == 6 and done.total_bytes > 64 << 20
    assert done.data_added < 2 << 20  # the sparse file's zeros are one chunk, stored once
    [snapshot] = await restic.snapshots(repo)
    assert (snapshot.id, snapshot.host, snapshot.tags) == (done.snapshot, "h1", ["env:e-1"])
    assert snapshot.time.utcoffset() is not None

    top = {e.path: e for e in await restic.entries(repo, done.snapshot)}
    names = {"notes.txt", "sub", "run.sh", "private", "etc", "dangling", "pipe", "sparse.img"}
    assert set(top) == names
    assert (top["etc"].type, top["etc"].target) == ("symlink", "/etc")
    assert (top["pipe"].type, top["pipe"].mode) == ("fifo", 0o640)
    assert (top["run.sh"].mode, top["private"].mode, top["notes.txt"].size) == (0o755, 0o600, 6)
    assert top["notes.txt"].mtime.timestamp() == pytest.approx(1_600_000_000.123456, abs=1e-6)
    assert [e.path for e in await restic.entries(repo, done.snapshot, "sub/")] == [
        "sub/data.bin",
        "sub/deep",
    ]
    # /etc was not read: the link is a leaf
    assert [e.path for e in await restic.entries(repo, done.snapshot, "etc")] == ["etc"]

    target = tmp_path / "elsewhere" / "home"
    target.parent.mkdir()
    restored = await restic.restore(repo, done.snapshot, target, uid=None, gid=None)

    assert tree(target) == before
    assert stat.S_ISFIFO(os.lstat(target / "pipe").st_mode)
    assert (target / "sparse.img").stat().st_blocks * 512 < 1 << 20  # its holes back
    assert (restored.files, restored.bytes) == (
        6,
        sum(p.stat().st_size for p in home.rglob("*") if p.is_file() and not p.is_symlink()),
    )
    assert list(target.parent.iterdir()) == [target]  # the staging directory is gone


async def test_incremental_backup_stores_only_the_change(repo: Repository, tmp_path: Path) -> None:
    home = tmp_path / "env" / "home"
    home.mkdir(parents=True)
    for i in range(100):
        (home / f"f{i:03}").write_bytes(os.urandom(20_000))
    first = await restic.backup(repo, home, host="h1", tags=[], excludes=[])
    (home / "f042").write_bytes(os.urandom(20_000))

    second = await restic.backup(repo, home, host="h1", tags=[], excludes=[], parent=first.snapshot)

    assert (first.files_new, second.files_changed, second.files_unmodified) == (100, 1, 99)
    assert second.data_added < first.data_added / 20
    # a parent that is not in the repository is dropped, not fatal
    third = await restic.backup(
        repo, home, host="h1", tags=[], excludes=[], parent="deadbeefdeadbeef"
    )
    assert third.files_unmodified == 100


async def test_excludes_are_relative_to_the_home(repo: Repository, tmp_path: Path) -> None:
    # restic's own rules would match `.cache` above the home (and leave it all out), expand
    # `$nv` and take `[1]` for a wildcard
    home = tmp_path / ".cache" / "e$nv[1]" / "home"
    for directory in ("node_modules/pkg", "build", "src/build", "src/app/node_modules", "logs"):
        (home / directory).mkdir(parents=True)
        (home / directory / "file").write_text(directory)
    (home / "logs" / "today.log").write_text("log")

    done = await restic.backup(repo, home, host="h1", tags=[], excludes=["/build", "*.log"])

    copy = tmp_path / "copy" / "home"
    copy.parent.mkdir()
    await restic.restore(repo, done.snapshot, copy, uid=None, gid=None)
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == [
        "logs",
        "logs/file",
        "src",
        "src/app",
        "src/build",
        "src/build/file",
    ]
    for bad in ["a\nb", "x\0", "/../etc", " spaced ", ""]:
        with pytest.raises(ResticError, match="exclude pattern"):
            await restic.backup(repo, home, host="h1", tags=[], excludes=[bad])


async def test_unreadable_files_are_warnings(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root reads everything: this restic runs without the capabilities that let it, as
    restic run by a less privileged agent would, so a file another uid keeps to itself is
    unreadable and restic exits with 3 (a snapshot, with what it could read)."""
    wrapper = tmp_path / "bin" / "restic"  # (root's capabilities dropped; restic itself)
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\nexec setpriv --bounding-set=-dac_override,-dac_read_search -- "
        f'{shutil.which("restic")} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    home = tmp_path / "env" / "home"
    home.mkdir(parents=True)
    (home / "readable").write_text("yes")
    (home / "secret").write_text("no")
    os.chown(home / "secret", OTHER, OTHER)
    (home / "secret").chmod(0)

    done = await restic.backup(repo, home, host="h1", tags=[], excludes=[])

    assert done.warnings == ["secret: open: Permission denied"]
    assert [e.path for e in await restic.entries(repo, done.snapshot)] == ["readable"]


async def test_cancelled_and_killed_backups_leave_the_repository_sound(
    repo: Repository, big_home: Path
) -> None:
    progress: list[Progress] = []
    running = asyncio.create_task(
        restic.backup(repo, big_home, host="h1", tags=[], excludes=[], on_progress=progress.append)
    )
    await until(lambda: any(p.bytes_done > 0 for p in progress), "backup progress")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert restic_children() == []  # stopped and reaped

    running = asyncio.create_task(restic.backup(repo, big_home, host="h1", tags=[], excludes=[]))
    [pid] = await until(lambda: restic_children(b"backup"), "restic backup running")
    await until(lambda: any(Path(repo.location, "locks").iterdir()), "restic's lock")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ResticError, match="SIGKILL"):
        await running
    assert any(Path(repo.location, "locks").iterdir())  # a stale lock stays behind

    await restic.check(repo)
    done = await restic.backup(repo, big_home, host="h1", tags=[], excludes=[])
    assert done.total_bytes == BIG_BYTES
    assert [s.id for s in await restic.snapshots(repo)] == [done.snapshot]


AGENT = """
import asyncio, sys
from pathlib import Path
from leeward.providers import restic
repository = restic.Repository(sys.argv[1], sys.argv[2])
asyncio.run(restic.backup(repository, Path(sys.argv[3]), host="h1", tags=[], excludes=[]))
"""


async def test_restic_dies_with_the_agent(repo: Repository, big_home: Path) -> None:
    """An agent killed with SIGKILL cannot stop its restic: the kernel does (its death signal)."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, repo.location, repo.password, str(big_home)
    )
    try:
        [pid] = await until(lambda: restic_children(b"backup", agent.pid), "the agent's backup")
    finally:
        agent.kill()
        await agent.wait()
    await until(lambda: not pid_alive(pid), "restic gone with its agent")


async def test_cancelled_restore_leaves_no_home(
    repo: Repository, big_home: Path, tmp_path: Path
) -> None:
    done = await restic.backup(repo, big_home, host="h1", tags=[], excludes=[])
    home = tmp_path / "restored" / "home"
    home.parent.mkdir()
    staging = home.parent / ".home.restoring"

    def restoring() -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in staging.rglob("*"))

    running = asyncio.create_task(restic.restore(repo, done.snapshot, home, uid=None, gid=None))
    await until(restoring, "restore under way")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert restic_children() == []
    assert not home.exists() and not staging.exists()

    staging.mkdir()  # as a kill -9 of the agent would leave it
    (staging / "leftover").write_text("x")
    restored = await restic.restore(repo, done.snapshot, home, uid=None, gid=None)
    assert (restored.files, restored.bytes) == (BIG_FILES, BIG_BYTES)
    assert tree(home) == tree(big_home)
    assert not staging.exists()


async def test_restore_gives_every_node_to_the_owner(repo: Repository, tmp_path: Path) -> None:
    home = make_home(tmp_path / "env")
    (home / "setuid").write_text("#!/bin/sh\n")
    (home / "setuid").chmod(0o4755)
    done = await restic.backup(repo, home, host="h1", tags=[], excludes=[])
    target = tmp_path / "other" / "home"
    target.parent.mkdir()

    await restic.restore(repo, done.snapshot, target, uid=OTHER, gid=OTHER + 1)

    owners = {
        (s.st_uid, s.st_gid) for s in [os.lstat(target)] + [os.lstat(p) for p in target.rglob("*")]
    }
    assert owners == {(OTHER, OTHER + 1)}
    assert os.lstat(target / "etc").st_uid == OTHER and os.stat("/etc").st_uid == 0
    assert stat.S_IMODE(os.lstat(target / "setuid").st_mode) == 0o4755
    with pytest.raises(ResticError, match="exists already"):
        await restic.restore(repo, done.snapshot, target, uid=None, gid=None)

    some = tmp_path / "some" / "home"
    some.parent.mkdir()
    await restic.restore(repo, done.snapshot, some, uid=None, gid=None, paths=["sub/deep"])
    assert sorted(str(p.relative_to(some)) for p in some.rglob("*")) == [
        "sub",
        "sub/deep",
        "sub/deep/c",
    ]


def same_node(copy: Node, original: Node, *, to_the_second: bool) -> bool:
    """Equal; the mtime within a second where restic 0.14's tar stream carried it (Go's tar
    writer rounds it to the second)."""
    if not to_the_second:
        return copy == original
    kind, mode, mtime, content = copy
    close = abs(mtime - original[2]) < 10**9
    return close and (kind, mode, content) == (original[0], original[1], original[3])


async def test_restore_paths_as_the_agent(repo: Repository, tmp_path: Path) -> None:
    home = make_home(tmp_path / "env")
    done = await restic.backup(repo, home, host="h1", tags=[], excludes=[])
    destination = tmp_path / "dest" / "restore"

    restored = await restic.restore_paths(
        repo, done.snapshot, ["sub", "run.sh", "etc"], destination=str(destination), inside=identity
    )

    assert (restored.files, restored.bytes) == (2 + 1, 100_000 + 5 + 18)
    original, copy = tree(home), tree(destination)
    assert set(copy) == {"sub", "sub/data.bin", "sub/deep", "sub/deep/c", "run.sh", "etc"}
    for path in copy:
        assert same_node(copy[path], original[path], to_the_second="/" in path), path


async def test_restore_paths_writes_as_the_owner_only(
    repo: Repository, tmp_path: Path, shared: Path
) -> None:
    home = make_home(tmp_path / "env")
    done = await restic.backup(repo, home, host="h1", tags=[], excludes=[])
    owned = shared / "owner"
    owned.mkdir()
    os.chown(owned, OTHER, OTHER)
    destination = owned / ".leeward-restore" / done.snapshot[:8]
    paths = ["sub", "notes.txt", "dangling", "pipe", "sub/deep/c"]

    await restic.restore_paths(
        repo, done.snapshot, paths, destination=str(destination), inside=as_owner
    )

    original, copy = tree(home), tree(destination)
    for path in copy:
        assert same_node(copy[path], original[path], to_the_second="/" in path), path
    assert stat.S_ISFIFO(os.lstat(destination / "pipe").st_mode)
    assert {os.lstat(p).st_uid for p in [destination, *destination.rglob("*")]} == {OTHER}

    # a link the owner planted leads only where the owner may go: not into root's directory
    victim = shared / "victim"
    victim.mkdir(mode=0o755)
    (destination / "sub").rename(destination / "was-sub")
    (destination / "sub").symlink_to(victim)
    os.lchown(destination / "sub", OTHER, OTHER)
    with pytest.raises(ResticError, match="as the environment's owner failed"):
        await restic.restore_paths(
            repo, done.snapshot, ["sub"], destination=str(destination), inside=as_owner
        )
    assert list(victim.iterdir()) == []
    # restic, its pipe broken, died holding its lock: cleared
    assert list(Path(repo.location, "locks").iterdir()) == []


async def test_refusals(repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path / "env")
    done = await restic.backup(repo, home, host="h1", tags=[], excludes=[])
    target = tmp_path / "t" / "home"
    target.parent.mkdir()

    wrong = Repository(location=repo.location, password="wrong horse")
    for attempt in (restic.init(wrong), restic.snapshots(wrong)):
        with pytest.raises(ResticError, match="does not open with this key"):
            await attempt
    # Without the key check, a repository that is there is taken as it is; the backup that
    # follows says the same.
    await restic.init(wrong, check_key=False)
    with pytest.raises(ResticError, match="does not open with this key"):
        await restic.backup(wrong, home, host="h1", tags=[], excludes=[])
    for snapshot in ["deadbeef", "zz!", "--help", done.snapshot[:4]]:
        with pytest.raises(ResticError, match=f"no snapshot {snapshot!r}|no snapshot {snapshot} "):
            await restic.entries(repo, snapshot)
        with pytest.raises(ResticError, match="no snapshot"):
            await restic.restore(repo, snapshot, target, uid=None, gid=None)
    for path in ["../x", "/abs", "sub/../../x"]:
        with pytest.raises(ResticError, match="relative to the home"):
            await restic.entries(repo, done.snapshot, path)
        with pytest.raises(ResticError, match="relative to the home"):
            await restic.restore(repo, done.snapshot, target, uid=None, gid=None, paths=[path])
        with pytest.raises(ResticError, match="relative to the home"):
            await restic.restore_paths(
                repo, done.snapshot, [path], destination=str(tmp_path / "d"), inside=identity
            )
    with pytest.raises(ResticError, match="no nothing"):
        await restic.entries(repo, done.snapshot, "nothing")
    with pytest.raises(ResticError, match="no nothing"):
        await restic.restore(repo, done.snapshot, target, uid=None, gid=None, paths=["nothing"])
    assert not target.exists()

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "setpriv").symlink_to(shutil.which("setpriv") or "/usr/bin/setpriv")
    monkeypatch.setenv("PATH", str(bare))
    with pytest.raises(ResticError, match="restic is not installed on this host"):
        await restic.snapshots(repo)


async def test_init_is_idempotent(tmp_path: Path) -> None:
    repository = Repository(location=str(tmp_path / "a" / "b" / "repo"), password="k")
    await restic.init(repository)
    await restic.init(repository)  # (restic init again would fail: it exists)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


async def test_forget_keeps_the_last(repo: Repository, tmp_path: Path) -> None:
    home = tmp_path / "env" / "home"
    home.mkdir(parents=True)
    made = []
    for host in ["h1", "h2", "h1", "h2"]:  # the home moved between hosts: still one home
        (home / "counter").write_bytes(os.urandom(50_000))
        made.append((await restic.backup(repo, home, host=host, tags=[], excludes=[])).snapshot)

    forgotten = await restic.forget(
        repo, Retention(last=2, hourly=0, daily=0, weekly=0), prune=True
    )

    assert sorted(forgotten) == sorted(made[:2])
    assert [s.id for s in await restic.snapshots(repo)] == made[2:]
    await restic.check(repo)


BIG_FILES = 50
BIG_BYTES = BIG_FILES * (4 << 20)


@pytest.fixture(scope="module")
def big_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200 MiB that does not compress nor deduplicate: long enough to be interrupted."""
    home = tmp_path_factory.mktemp("big") / "home"
    home.mkdir()
    for i in range(BIG_FILES):
        (home / f"blob{i:02}").write_bytes(os.urandom(4 << 20))
    return home
