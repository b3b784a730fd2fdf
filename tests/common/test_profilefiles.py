"""The checks every profile file passes (fleet, agent and CLI alike), on a real home."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leeward.common.profilefiles import (
    UPLOAD_CONTENT_BYTES,
    Limits,
    LocalFile,
    check_content,
    check_path,
    over_limits,
    scan,
    sent_size,
    upload_batches,
)
from leeward.fleet.config import ProfileStoreConfig
from leeward_protocol.profile import ProfileUpload

LIMITS = Limits(max_file_bytes=1 << 20, max_files=1000, max_total_bytes=32 << 20)


def codes(refusals: list) -> dict[str, str]:
    return {r.path: r.code for r in refusals}


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "~/.bashrc", "a//b", "", "./x"]
)
def test_paths_that_leave_the_home_are_refused(path: str) -> None:
    found = check_path(path)
    assert found is not None and found.code == "escapes-home"
    assert "inside the home" in found.reason


def test_conflict_copies_and_own_state_are_never_profile_files() -> None:
    assert check_path(".bashrc.leeward-conflict-b-20261128T120000Z") is not None
    assert check_path(".local/state/leeward/sync.json") is not None
    assert check_path(".config/git/ignore") is None


def test_secrets_and_binary_are_refused_unless_allowed(tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True
    )
    rsa = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA"], capture_output=True, check=False
    ).stdout
    samples = [
        (tmp_path / "id").read_bytes(),
        b"export GITHUB_TOKEN=ghp_" + b"a" * 36 + b"\n",
        b"aws_access_key_id = AKIA" + b"ABCDEFGHIJKLMNOP" + b"\n",
    ]
    if rsa:
        samples.append(rsa)
    for data in samples:
        found = check_content(".config/x", data)
        assert found is not None and found.code == "secret", data[:40]
        assert "allow_secrets" in found.reason
        assert check_content(".config/x", data, allow_secrets=[".config/*"]) is None
    junk = os.urandom(4096)
    found = check_content(".config/blob", junk)
    assert found is not None and found.code == "binary"
    assert check_content(".config/blob", junk, allow_binary=[".config/blob"]) is None
    assert check_content(".bashrc", "alias ll='ls -l'  # café ☕\n".encode()) is None


def test_scan_refuses_what_only_the_file_system_shows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".bashrc").write_text("export EDITOR=vim\n")
    (home / ".config" / "git" / "ignore").write_text("*.swp\n")
    (home / ".config" / "evil").symlink_to("/etc")
    (home / ".config" / "passwd").symlink_to("/etc/passwd")
    (home / ".config" / "inside").symlink_to(home / ".bashrc")
    with open(home / ".config" / "big", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that takes no disk, and must not be read
    os.mkfifo(home / ".config" / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(home / ".config" / "sock"))
    try:
        files, refused = scan(home, [".bashrc", ".config", ".zshrc"], LIMITS)
    finally:
        sock.close()
    assert [f.path for f in files] == [".bashrc", ".config/git/ignore", ".config/inside"]
    assert files[2].data == b"export EDITOR=vim\n"
    assert codes(refused) == {
        ".config/evil": "symlink",
        ".config/passwd": "symlink",
        ".config/big": "too-large",
        ".config/fifo": "not-a-file",
        ".config/sock": "not-a-file",
    }
    assert "1 GiB" in next(r.reason for r in refused if r.code == "too-large")


def test_absolute_links_under_the_homes_own_path_lead_into_the_home(tmp_path: Path) -> None:
    # In a sandbox the home is /home/alice inside and elsewhere on the host: a dotfile linked
    # the way its owner sees it stays in the home; one that climbs out does not.
    home = tmp_path / "home"
    (home / "dotfiles" / "git").mkdir(parents=True)
    (home / "dotfiles" / "bashrc").write_text("alias gs='git status'\n")
    (home / "dotfiles" / "git" / "config").write_text("[user]\n\tname = Alice\n")
    (home / ".bashrc").symlink_to("/home/alice/dotfiles/bashrc")
    (home / ".config").mkdir()
    (home / ".config" / "git").symlink_to("/home/alice/dotfiles/git")
    (home / ".profile").symlink_to("/home/alice/../../etc/passwd")
    (home / ".inputrc").symlink_to("/etc/inputrc")
    tracked = [".bashrc", ".config", ".profile", ".inputrc"]

    found, refused = scan(home, tracked, LIMITS, alias="/home/alice")
    assert {f.path: f.data for f in found} == {".bashrc": b"alias gs='git status'\n"}
    assert codes(refused) == {".profile": "symlink", ".inputrc": "symlink"}
    # .config/git, a link to a directory, is not followed (as any symlinked directory), but it
    # is not refused as outside the home either.
    assert ".config/git" not in codes(refused)

    # Without the alias (the home seen at its own path) the same links lead out of it.
    _, refused = scan(home, tracked, LIMITS)
    assert {".bashrc", ".config/git", ".profile", ".inputrc"} <= set(codes(refused))


def test_too_many_new_files_are_refused_together() -> None:
    def f(path: str, size: int = 10) -> LocalFile:
        return LocalFile(path, "0" * 64, size, 0o644, None, b"")  # type: ignore[arg-type]

    current = {".bashrc": 10}
    junk = [f(f".config/junk/{i}") for i in range(10_000)]
    kept, refused = over_limits(current, [f(".bashrc", 20), f(".vimrc"), *junk], LIMITS)
    assert [k.path for k in kept] == [".bashrc", ".vimrc"]  # the junk directory alone goes
    assert len(refused) == 1 and refused[0].code == "too-many-files"
    assert refused[0].path == ".config/junk" and "10000 new files" in refused[0].reason
    # Two directories over the limit together: the larger is refused, the other fits.
    few = Limits(max_file_bytes=100, max_files=5, max_total_bytes=10_000)
    more = [f(f"a/{i}") for i in range(4)] + [f(f"b/{i}") for i in range(2)]
    kept, refused = over_limits({}, more, few)
    assert [k.path for k in kept] == ["b/0", "b/1"] and [r.path for r in refused] == ["a"]
    small = Limits(max_file_bytes=100, max_files=10, max_total_bytes=50)
    kept, refused = over_limits({}, [f("a", 30), f("b", 30)], small)
    assert [k.path for k in kept] == ["b"] and refused[0].code == "profile-too-large"


def test_big_uploads_are_split_under_the_body_limit() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    files = [LocalFile(f".config/f{i}", "0" * 64, 1 << 20, 0o644, t0, b"") for i in range(14)]
    batches = upload_batches(files)
    assert len(batches) == 5  # three 1 MiB files (4 MiB in base64) an upload, not four
    assert all(sum(sent_size(f.size) for f in b) <= UPLOAD_CONTENT_BYTES for b in batches)
    assert [f for b in batches for f in b] == files
    assert upload_batches([]) == [[]]  # removals alone still make one request


def test_a_full_upload_fits_the_fleets_default_body_limit() -> None:
    """The largest batch, as JSON on the wire, is under `profile_store.max_upload_bytes`."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    data = bytes(range(256)) * 4096  # 1 MiB, the largest file a profile holds
    files = [LocalFile(f".config/big-{i}", "0" * 64, len(data), 0o644, t0, data) for i in range(9)]
    biggest = max(upload_batches(files), key=len)
    body = ProfileUpload(files=[f.upload(base_sha256="0" * 64) for f in biggest])
    assert len(json.dumps(body.wire()).encode()) < ProfileStoreConfig().max_upload_bytes
