"""Files replaced whole: the mode whatever the umask, a symlink replaced and not followed, nothing
left behind when the write fails, and secrets in a private directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from leeward.common.files import TMP_MARK, write_atomic, write_private


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if TMP_MARK in p.name]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_mode_is_the_one_asked_for_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.json", "{}", mode=0o644, modified_at=1_700_000_000)
        write_atomic(tmp_path / "b", b"\x00\x01", mode=0o600, durable=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert (tmp_path / "a.json").stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert leftovers(tmp_path) == []


def test_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep me")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").symlink_to(outside)
    write_atomic(home / ".bashrc", "alias ll='ls -l'\n")
    assert not (home / ".bashrc").is_symlink()
    assert (home / ".bashrc").read_text() == "alias ll='ls -l'\n"
    assert outside.read_text() == "keep me"


def test_a_failed_write_leaves_the_old_state_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(IsADirectoryError):
        write_atomic(target, "cannot replace a directory")  # the rename fails
    assert (target / "inside").read_text() == "x"
    assert leftovers(tmp_path) == []


def test_secrets_go_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "credentials.toml"
    write_private(path, "token = 'x'\n")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
