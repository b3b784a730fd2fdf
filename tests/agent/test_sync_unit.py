"""The agent's profile sync against a temp home and an in-memory fleet (no network): what is
applied, what is uploaded, and what happens to a file edited in two places."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leeward.agent.sync.profilesync import ProfileSync
from leeward.agent.sync.record import SyncState
from leeward.common.clock import ManualClock
from leeward.common.errors import FleetError
from leeward_protocol.fleet import SyncStatus
from leeward_protocol.profile import (
    AgentProfile,
    Profile,
    ProfileFile,
    ProfileLimits,
    ProfileUpload,
    UploadConflict,
    UploadResult,
)
from leeward_protocol.userconfig import UserConfig
from tests.conftest import until

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MemoryFleet:
    """The fleet's profile rules, in memory: a version per change, and an upload whose base
    is not what the profile holds is a conflict."""

    def __init__(self, tracked: list[str] | None = None, config: UserConfig | None = None) -> None:
        self.version = 0
        self.files: dict[str, ProfileFile] = {}
        self.store: dict[str, bytes] = {}
        self.tracked = tracked or [".bashrc", ".config"]
        self.config = config
        self.uploads: list[ProfileUpload] = []
        self.reports: list[SyncStatus] = []
        self.waits: list[int] = []
        self.fail: Exception | None = None
        self.hold: asyncio.Event | None = None

    def put(self, path: str, data: bytes, source: str = "box-b", mode: int = 0o644) -> None:
        """Another environment's edit."""
        self.version += 1
        self.store[sha(data)] = data
        self.files[path] = ProfileFile(
            path=path,
            sha256=sha(data),
            size=len(data),
            mode=mode,
            modified_at=T0,
            source=source,
            version=self.version,
        )

    def drop(self, path: str) -> None:
        self.version += 1
        del self.files[path]

    def content(self, path: str) -> bytes:
        return self.store[self.files[path].sha256]

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def profile(self) -> AgentProfile:
        self._check()
        if self.hold is not None:
            await self.hold.wait()
        return AgentProfile(
            owner="alice",
            profile=Profile(
                user="alice",
                version=self.version,
                config=self.config,
                files=sorted(self.files.values(), key=lambda f: f.path),
                limits=ProfileLimits(
                    max_file_bytes=1 << 20,
                    max_files=100,
                    max_total_bytes=32 << 20,
                    history_versions=50,
                ),
            ),
            tracked=self.tracked,
            debounce_seconds=0.05,
        )

    async def blobs(self, sha256: list[str]) -> dict[str, bytes]:
        self._check()
        return {s: self.store[s] for s in sha256 if s in self.store}

    async def wait(self, after: int) -> int:
        self._check()
        self.waits.append(after)
        return self.version

    async def upload(self, upload: ProfileUpload) -> UploadResult:
        self._check()
        self.uploads.append(upload)
        result = UploadResult(version=self.version)
        changes: list[tuple[str, bytes | None, int]] = []
        for f in upload.files:
            held = self.files.get(f.path)
            if f.base_sha256 != (held.sha256 if held else None):
                result.conflicts.append(self._conflict(f.path))
                continue
            changes.append((f.path, base64.b64decode(f.content), f.mode))
        for r in upload.removed:
            held = self.files.get(r.path)
            if held is None or r.base_sha256 != held.sha256:
                result.conflicts.append(self._conflict(r.path))
                continue
            changes.append((r.path, None, 0))
        if changes:
            self.version += 1
            for path, data, mode in changes:
                if data is None:
                    del self.files[path]
                    result.removed.append(path)
                    continue
                self.store[sha(data)] = data
                self.files[path] = ProfileFile(
                    path=path,
                    sha256=sha(data),
                    size=len(data),
                    mode=mode,
                    modified_at=T0,
                    source="box-a",
                    version=self.version,
                )
                result.stored.append(path)
        result.version = self.version
        return result

    def _conflict(self, path: str) -> UploadConflict:
        held = self.files.get(path)
        return UploadConflict(
            path=path,
            sha256=held.sha256 if held else None,
            version=held.version if held else self.version,
            source=held.source if held else "box-b",
        )

    async def report(self, *, sync: SyncStatus) -> None:
        self.reports.append(sync)  # reports get through: the test reads them


def engine(home: Path, fleet: MemoryFleet, clock: ManualClock | None = None) -> ProfileSync:
    return ProfileSync(home, fleet, owner="alice", name="box-a", clock=clock or ManualClock(T0))


def conflict_copies(home: Path, path: str) -> list[Path]:
    return sorted((home / path).parent.glob(Path(path).name + ".leeward-conflict-*"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


async def test_the_first_sync_writes_the_profile_with_its_modes_and_times(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"alias ll='ls -l'\n", mode=0o600)
    fleet.put(".config/git/ignore", b"*.pyc\n")
    sync = engine(home, fleet)
    await sync.begin()
    assert (home / ".bashrc").read_bytes() == b"alias ll='ls -l'\n"
    assert (home / ".bashrc").stat().st_mode & 0o777 == 0o600
    assert (home / ".bashrc").stat().st_mtime == T0.timestamp()
    assert (home / ".config/git/ignore").read_bytes() == b"*.pyc\n"
    record = json.loads((home / ".local/state/leeward/sync.json").read_text())
    assert record["version"] == 2
    assert record["synced"][".bashrc"] == sha(b"alias ll='ls -l'\n")
    assert [r.version for r in fleet.reports] == [2]
    assert fleet.reports[0].error == ""
    assert fleet.reports[0].synced_at == T0
    # Nothing to upload: the home is the profile.
    await sync.push()
    assert fleet.uploads == []


async def test_an_unedited_file_takes_the_newer_version(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    sync = engine(home, fleet)
    await sync.begin()
    fleet.put(".bashrc", b"two\n")
    await sync.pull()
    assert (home / ".bashrc").read_bytes() == b"two\n"
    assert conflict_copies(home, ".bashrc") == []
    assert sync.status.conflicts == []
    assert sync.state.version == fleet.version


async def test_a_file_edited_here_keeps_ours_and_writes_theirs_next_to_it(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    sync = engine(home, fleet)
    await sync.begin()
    (home / ".bashrc").write_bytes(b"ours\n")
    fleet.put(".bashrc", b"theirs\n", source="box-b")
    await sync.pull()
    assert (home / ".bashrc").read_bytes() == b"ours\n"
    [copy] = conflict_copies(home, ".bashrc")
    assert copy.name == ".bashrc.leeward-conflict-box-b-20260301T120000Z"
    assert copy.read_bytes() == b"theirs\n"
    [conflict] = sync.status.conflicts
    assert conflict.path == ".bashrc"
    assert conflict.copy_path == copy.name
    assert conflict.other_environment == "box-b"
    assert conflict.version == fleet.version
    assert fleet.reports[-1].conflicts == [conflict]
    # Ours goes on top of theirs, with theirs as the base: no conflict at the fleet.
    await sync.push()
    assert fleet.content(".bashrc") == b"ours\n"
    assert fleet.uploads[-1].files[0].base_sha256 == sha(b"theirs\n")
    assert sync.state.version == fleet.version
    # The conflict copy is never uploaded, and the same version is not a conflict twice.
    assert [f.path for u in fleet.uploads for f in u.files] == [".bashrc"]
    await sync.pull()
    assert len(conflict_copies(home, ".bashrc")) == 1


async def test_an_upload_conflict_keeps_both_and_puts_ours_on_top(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    sync = engine(home, fleet)
    await sync.begin()
    (home / ".bashrc").write_bytes(b"ours\n")
    fleet.put(".bashrc", b"theirs\n", source="box-b")  # not yet seen here
    await sync.push()
    first, second = fleet.uploads
    assert first.files[0].base_sha256 == sha(b"one\n")
    assert second.files[0].base_sha256 == sha(b"theirs\n")
    assert fleet.content(".bashrc") == b"ours\n"
    [copy] = conflict_copies(home, ".bashrc")
    assert copy.read_bytes() == b"theirs\n"
    assert [c.other_environment for c in sync.status.conflicts] == ["box-b"]
    assert fleet.reports[-1].conflicts == sync.status.conflicts


async def test_removals_follow_only_unedited_files(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"b\n")
    fleet.put(".config/a", b"a\n")
    fleet.put(".config/c", b"c\n")
    sync = engine(home, fleet)
    await sync.begin()
    (home / ".config/c").write_bytes(b"c edited\n")
    fleet.drop(".config/a")
    fleet.drop(".config/c")
    await sync.pull()
    assert not (home / ".config/a").exists()
    assert (home / ".config/c").read_bytes() == b"c edited\n"  # edited here: kept, and back in
    await sync.push()
    assert fleet.content(".config/c") == b"c edited\n"
    assert fleet.uploads[-1].files[0].base_sha256 is None
    # A file removed here is removed from the profile.
    (home / ".bashrc").unlink()
    await sync.push()
    assert ".bashrc" not in fleet.files
    assert [r.path for r in fleet.uploads[-1].removed] == [".bashrc"]


async def test_a_restarted_agent_does_not_see_its_files_as_edited(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    await engine(home, fleet).begin()
    fleet.put(".bashrc", b"two\n")
    again = engine(home, fleet)
    assert again.state.version == 1 and not again.state.fresh
    await again.begin()
    assert (home / ".bashrc").read_bytes() == b"two\n"
    assert conflict_copies(home, ".bashrc") == []
    await again.push()
    assert fleet.uploads == []


async def test_a_home_that_predates_the_profile_takes_it_and_keeps_its_own_aside(
    home: Path,
) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"from the profile\n")
    (home / ".bashrc").write_bytes(b"from the image\n")
    sync = engine(home, fleet)
    await sync.begin()
    assert (home / ".bashrc").read_bytes() == b"from the profile\n"
    [copy] = conflict_copies(home, ".bashrc")
    assert copy.read_bytes() == b"from the image\n"
    await sync.push()
    assert fleet.uploads == []


async def test_the_profile_never_writes_through_a_symlink_out_of_the_home(
    home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / ".config").symlink_to(outside)
    fleet = MemoryFleet()
    fleet.put(".config/evil", b"x\n")
    fleet.put(".bashrc", b"fine\n")
    sync = engine(home, fleet)
    await sync.begin()
    assert list(outside.iterdir()) == []
    assert (home / ".bashrc").read_bytes() == b"fine\n"


async def test_hostile_files_are_refused_and_reported_not_uploaded(home: Path) -> None:
    fleet = MemoryFleet(config=UserConfig(allow_binary=[".config/allowed.bin"]))
    sync = engine(home, fleet)
    await sync.begin()
    config = home / ".config"
    config.mkdir()
    (config / "key.pem").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    (config / "blob").write_bytes(os.urandom(4096))
    (config / "allowed.bin").write_bytes(b"\x00\x01\x02")
    with open(config / "big", "wb") as f:
        f.truncate(2 << 20)
    (config / "fine").write_text("ok\n")
    await sync.push()
    codes = {r.path: r.code for r in sync.status.refused}
    assert codes == {
        ".config/key.pem": "secret",
        ".config/blob": "binary",
        ".config/big": "too-large",
    }
    assert set(fleet.files) == {".config/allowed.bin", ".config/fine"}
    assert fleet.reports[-1].refused == sync.status.refused
    # A scan that finds the same again reports nothing new and uploads nothing.
    reports, uploads = len(fleet.reports), len(fleet.uploads)
    await sync.push()
    assert (len(fleet.reports), len(fleet.uploads)) == (reports, uploads)


async def test_a_fleet_that_does_not_answer_delays_the_start_by_the_bound_only(
    home: Path,
) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"x\n")
    fleet.hold = asyncio.Event()  # never set: the fleet does not answer
    sync = engine(home, fleet)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sync.begin(within=0.3)
    assert loop.time() - started < 2
    assert "did not send the profile within 0.3 s" in sync.status.error
    assert not (home / ".bashrc").exists()
    fleet.hold = None
    fleet.fail = FleetError("cannot reach 127.0.0.1:9: Connection refused")
    await sync.begin()
    assert "Connection refused" in sync.status.error


async def test_the_follower_backs_off_on_the_injected_clock_and_recovers(home: Path) -> None:
    clock = ManualClock(T0)
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    sync = engine(home, fleet, clock)
    await sync.begin()
    fleet.fail = FleetError("the fleet answered 503: busy")
    task = asyncio.create_task(sync._follow())
    try:
        await until(lambda: bool(fleet.reports) and "503" in fleet.reports[-1].error)
        waits = len(fleet.waits)
        for _ in range(20):  # it sleeps on the clock, not in a busy loop
            await asyncio.sleep(0)
        assert len(fleet.waits) == waits
        fleet.fail = None
        fleet.put(".bashrc", b"two\n")
        clock.advance(timedelta(seconds=3))  # over the first backoff (2 s ± 20 %)
        await until(lambda: (home / ".bashrc").read_bytes() == b"two\n")
        await until(lambda: fleet.reports[-1].error == "" and fleet.reports[-1].version == 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_edit_is_uploaded_within_two_seconds_of_the_write(home: Path) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"one\n")
    sync = ProfileSync(home, fleet, owner="alice", name="box-a")  # the system clock
    await sync.begin()
    sync.start()
    try:
        await until(lambda: bool(sync._tasks) and sync._watch is not None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        (home / ".bashrc").write_bytes(b"two\n")
        await until(lambda: fleet.content(".bashrc") == b"two\n", timeout=2.0)
        assert loop.time() - started < 2.0
        # A tracked directory made after the start is watched too.
        (home / ".config/nvim").mkdir(parents=True)
        (home / ".config/nvim/init.lua").write_text("vim.o.number = true\n")
        await until(lambda: ".config/nvim/init.lua" in fleet.files, timeout=2.0)
    finally:
        await sync.stop()


def test_an_unreadable_record_starts_afresh(home: Path) -> None:
    (home / ".local/state/leeward").mkdir(parents=True)
    (home / ".local/state/leeward/sync.json").write_text("{not json")
    assert SyncState.load(home, "alice").fresh
    SyncState("alice", 3, {".bashrc": "ab"}).save(home)
    assert SyncState.load(home, "alice").synced == {".bashrc": "ab"}
    assert SyncState.load(home, "bob").fresh  # another owner's record is not ours


async def test_another_owners_profile_and_paths_a_profile_may_not_hold_are_never_written(
    home: Path,
) -> None:
    fleet = MemoryFleet()
    fleet.put(".bashrc", b"alice's\n")
    fleet.put(".local/state/leeward/sync.json", b'{"owner": "mallory"}')
    bob = ProfileSync(home, fleet, owner="bob", name="box-a", clock=ManualClock(T0))
    await bob.begin()
    assert "alice's profile, this environment is bob's" in bob.status.error
    assert list(home.iterdir()) == []
    await engine(home, fleet).begin()
    assert (home / ".bashrc").read_bytes() == b"alice's\n"
    assert json.loads((home / ".local/state/leeward/sync.json").read_text())["owner"] == "alice"
