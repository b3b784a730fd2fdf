"""The agent and its sandbox, through the local provider: a new version of an image reaches new
environments and leaves running ones alone; a sandbox whose every process the owner killed
(`kill -9 -1`: its PID 1 then ends) comes back empty at the next session; a warm container gets
its sandbox when it is claimed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from leeward.providers.local import LocalProvider
from leeward.sandbox import images
from leeward.sandbox.sandbox import STATE_FILE, probe
from tests.conftest import until

from .kit import Fleet, Kit

pytestmark = pytest.mark.skipif(
    not probe().ok, reason=f"this machine makes no sandboxes: {probe().reason}"
)


def sandbox_pid(provider_dir: Path, env_id: str) -> int:
    return int(json.loads((provider_dir / env_id / STATE_FILE).read_text())["pid"])


async def test_a_new_image_version_reaches_new_environments_only(
    fleet: Fleet, kit: Kit, provider: LocalProvider, tmp_path: Path
) -> None:
    base = images.ensure(images.DEFAULT_IMAGE)
    # Version 2 of the image: the same tree (hard links, quick) and one file more.
    second = tmp_path / "v2" / "rootfs"
    second.parent.mkdir()
    subprocess.run(["cp", "-al", str(base.rootfs), str(second)], check=True)
    (second / "etc" / "leeward-image").write_text("version 2\n")
    current = [base]
    provider.image = lambda name: current[0]  # type: ignore[method-assign]

    old = fleet.spec(owner="alice")
    await provider.start(old)
    user = kit.user("alice")
    on_old = kit.ssh(old, user)
    done = await on_old.run("ssh", "box", "tmux new -d -s work 'sleep 600'; cat /etc/leeward-image")
    assert done.returncode != 0, "version 1 has no such file"
    pid = sandbox_pid(tmp_path / "envs", old.id)

    current[0] = images.Image("base", "b" * 64, second, base.size_bytes)
    new = fleet.spec(owner="alice")
    await provider.start(new)
    done = await kit.ssh(new, user).run("ssh", "box", "cat /etc/leeward-image")
    assert (done.returncode, done.stdout) == (0, b"version 2\n"), done.stderr

    # The running one is given the new version (its config names it) and goes on as it was:
    # the same sandbox, its tmux, the old tree. The new version is its at its next start.
    await provider.start(old)
    assert sandbox_pid(tmp_path / "envs", old.id) == pid
    done = await on_old.run("ssh", "box", "tmux ls; test ! -e /etc/leeward-image")
    assert done.returncode == 0 and done.stdout.startswith(b"work:"), done.stderr


async def test_a_sandbox_killed_from_inside_comes_back_empty(
    fleet: Fleet, kit: Kit, provider: LocalProvider, tmp_path: Path
) -> None:
    env = fleet.spec(owner="alice")
    await provider.start(env)
    ssh = kit.ssh(env, kit.user("alice"))
    before = sandbox_pid(tmp_path / "envs", env.id)
    done = await ssh.run("ssh", "box", "nohup sleep 600 >/dev/null 2>&1 & kill -9 -1")
    assert done.returncode in (0, 255), done.stderr  # the session may go with the sandbox
    await until(lambda: not Path(f"/proc/{before}").exists(), "the sandbox's PID 1 ended")
    done = await ssh.run("ssh", "box", "pgrep -c sleep; true")
    assert done.returncode == 0, done.stderr
    assert sandbox_pid(tmp_path / "envs", env.id) != before
    assert done.stdout.strip() == b"1", "only the new sandbox's own sleep"


async def test_a_warm_container_gets_its_sandbox_when_claimed(
    fleet: Fleet, kit: Kit, provider: LocalProvider, tmp_path: Path
) -> None:
    warm = fleet.spec(owner=None)
    await provider.start(warm)
    assert not (tmp_path / "envs" / warm.id / STATE_FILE).exists(), "no owner, no sandbox"
    claimed = fleet.reassigned(warm, "alice")
    await provider.assign(claimed)
    done = await kit.ssh(claimed, kit.user("alice")).run("ssh", "box", "id -un; pwd")
    assert (done.returncode, done.stdout.split()) == (0, [b"alice", b"/home/alice"]), done.stderr
    home = (tmp_path / "envs" / warm.id / "home").stat()
    owners = json.loads(provider.owners_file.read_text())
    assert home.st_uid == owners["alice"]
