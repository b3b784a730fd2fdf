"""Images: the cache (digests, builds that fail or crash, concurrent builders, pruning) with
builders that make a small tree, mmdebstrap's side (its arguments, progress, failures) with a
stand-in `mmdebstrap` on PATH, then real builds into the machine's cache: `base` here, `web` and
`jupyter` marked slow. A real image is built once per machine and recipe; later runs find it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from leeward.sandbox import images, recipes
from leeward.sandbox.images import IMAGES, Image, ImageError, Recipe


class TreeBuilder:
    """A builder that makes a small tree (or fails after half of it), counting its builds."""

    def __init__(self, *, fail: bool = False, hold: threading.Event | None = None) -> None:
        self.fail = fail
        self.hold = hold
        """Set: the build goes on. Until then it is under way (other builders can pile up)."""
        self.builds = 0
        self._count = threading.Lock()

    def __call__(
        self,
        recipe: Recipe,
        rootfs: Path,
        *,
        mirror: str,
        progress: images.Progress,
        log: Path,
    ) -> None:
        with self._count:
            self.builds += 1
        (rootfs / "usr" / "bin").mkdir(parents=True)
        (rootfs / "usr" / "bin" / "python3").write_text("#!/bin/sh\n")
        progress("installing")
        if self.hold is not None:
            assert self.hold.wait(30), "the test never let the build finish"
        if self.fail:
            raise ImageError("the mirror went away halfway")
        (rootfs / "home").mkdir()


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith((".lock", ".log")))


def test_the_digest_changes_with_a_package_or_a_command_and_only_with_them() -> None:
    base = IMAGES["base"]
    assert len(base.digest) == 64 and base.digest == IMAGES["base"].digest
    more = dataclasses.replace(base, packages=(*base.packages, "vim"))
    hooked = dataclasses.replace(base, customize=(images.Hook("x", 'touch "$1/x"'),))
    relabelled = dataclasses.replace(hooked, customize=(images.Hook("y", 'touch "$1/x"'),))
    reordered = dataclasses.replace(base, packages=tuple(reversed(base.packages)))
    assert len({base.digest, more.digest, hooked.digest}) == 3
    assert relabelled.digest == hooked.digest  # a label is only for progress
    assert reordered.digest == base.digest
    assert len({r.digest for r in IMAGES.values()}) == 3


def test_a_new_format_changes_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {name: recipe.digest for name, recipe in IMAGES.items()}
    monkeypatch.setattr(recipes, "FORMAT", recipes.FORMAT + 1)
    assert all(recipe.digest != before[name] for name, recipe in IMAGES.items())


def test_recipes_hold_what_the_sandbox_needs() -> None:
    assert images.DEFAULT_IMAGE in IMAGES and set(IMAGES) == {"base", "web", "jupyter"}
    for recipe in IMAGES.values():
        needed = {"openssh-sftp-server", "openssh-client", "rsync", "python3", "tmux"}
        assert needed <= set(recipe.packages)
    with pytest.raises(ValueError, match="Debian package name"):
        Recipe(name="bad", packages=("python3,git",))
    with pytest.raises(ValueError, match="image name"):
        Recipe(name="Bad.Name", packages=())


def test_an_unknown_name_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"'nope'.*base, web, jupyter"):
        images.ensure("nope", cache=tmp_path, builder=TreeBuilder())
    with pytest.raises(ImageError, match="base, web, jupyter"):
        images.find("nope", cache=tmp_path)


def test_the_cache_is_the_environments_else_roots_else_the_users(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path / "c"))
    assert images.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(images.CACHE_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert images.cache_dir() == Path("/var/cache/leeward/images")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert images.cache_dir() == tmp_path / ".cache" / "leeward" / "images"


def test_find_is_none_before_the_build_and_the_image_after(tmp_path: Path) -> None:
    cache = tmp_path / "images"
    assert images.find("web", cache=cache) is None
    lines: list[str] = []
    builder = TreeBuilder()
    built = images.ensure("web", cache=cache, builder=builder, progress=lines.append)
    assert built == images.find("web", cache=cache)
    assert built.rootfs == cache / f"web-{IMAGES['web'].digest[:16]}" / "rootfs"
    assert (built.rootfs / "usr" / "bin" / "python3").is_file() and built.size_bytes > 0
    record = json.loads((built.rootfs.parent / "image.json").read_text())
    assert record["digest"] == IMAGES["web"].digest and record["size_bytes"] == built.size_bytes
    assert {"recipe", "built_at", "build_seconds"} <= set(record)
    assert lines[0] == "image web: installing" and lines[-1].startswith("image web: ready, ")
    assert images.find("base", cache=cache) is None
    assert entries(cache) == [built.rootfs.parent.name]
    assert images.ensure("web", cache=cache, builder=builder) == built and builder.builds == 1


def test_a_build_that_fails_halfway_leaves_nothing_and_the_next_one_succeeds(
    tmp_path: Path,
) -> None:
    with pytest.raises(ImageError, match="halfway"):
        images.ensure("base", cache=tmp_path, builder=TreeBuilder(fail=True))
    assert images.find("base", cache=tmp_path) is None
    assert entries(tmp_path) == []
    image = images.ensure("base", cache=tmp_path, builder=TreeBuilder())
    assert (image.rootfs / "home").is_dir()


CRASHING_BUILD = """
import os, sys
from pathlib import Path
from leeward.sandbox import images, recipes

def builder(recipe, rootfs, *, mirror, progress, log):
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "half").write_text("written before the crash")
    os._exit(9)

images.ensure("base", cache=Path(sys.argv[1]), builder=builder)
"""


def test_a_crashed_build_leaves_only_a_temporary_directory_the_next_build_removes(
    tmp_path: Path,
) -> None:
    crashed = subprocess.run([sys.executable, "-c", CRASHING_BUILD, str(tmp_path)], check=False)
    assert crashed.returncode == 9
    [leftover] = entries(tmp_path)
    assert (
        leftover.startswith(".build.base.") and (tmp_path / leftover / "rootfs/etc/half").exists()
    )
    assert images.find("base", cache=tmp_path) is None
    image = images.ensure("base", cache=tmp_path, builder=TreeBuilder())
    assert entries(tmp_path) == [image.rootfs.parent.name]


def test_concurrent_threads_build_once(tmp_path: Path) -> None:
    hold = threading.Event()
    builder = TreeBuilder(hold=hold)
    results: list[Image] = []
    said: list[str] = []

    def build() -> None:
        image = images.ensure("jupyter", cache=tmp_path, builder=builder, progress=said.append)
        results.append(image)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    # The build is held until the three others wait for it: they all meet it under way.
    deadline = time.monotonic() + 30
    while sum("waiting for the build" in line for line in said) < 3:
        assert time.monotonic() < deadline, f"the others never waited: {said}"
        time.sleep(0.01)
    hold.set()
    for thread in threads:
        thread.join()
    assert builder.builds == 1 and len(results) == 4 and len(set(results)) == 1


SLOW_BUILD = """
import sys, time
from pathlib import Path
from leeward.sandbox import images, recipes

def builder(recipe, rootfs, *, mirror, progress, log):
    with open(sys.argv[2], "a") as count:
        count.write("built\\n")
    deadline = time.monotonic() + 30  # held until the test lets it go (file `go`)
    while not Path(sys.argv[3]).exists():
        assert time.monotonic() < deadline, "the test never let the build finish"
        time.sleep(0.01)
    (rootfs / "home").mkdir(parents=True)

lines = []

def say(line):
    lines.append(line)
    with open(sys.argv[4], "a") as said:
        said.write(line + "\\n")

image = images.ensure("web", cache=Path(sys.argv[1]), builder=builder, progress=say)
print(image.rootfs, "waited" if any("waiting" in line for line in lines) else "")
"""


def test_concurrent_processes_build_once_the_others_wait(tmp_path: Path) -> None:
    cache, count = tmp_path / "images", tmp_path / "builds"
    go, said = tmp_path / "go", tmp_path / "said"
    said.touch()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SLOW_BUILD, str(cache), str(count), str(go), str(said)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    # The build is held until the two others wait for it.
    deadline = time.monotonic() + 30
    while said.read_text().count("waiting for the build") < 2:
        assert time.monotonic() < deadline, f"the others never waited: {said.read_text()}"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60)[0].split() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert count.read_text() == "built\n"
    assert len({output[0] for output in outputs}) == 1
    assert sum(output[1:] == ["waited"] for output in outputs) >= 1  # the others waited


def test_prune_removes_old_versions_but_not_the_current_or_kept_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_recipes = {
        name: dataclasses.replace(recipe, packages=(*recipe.packages, "vim"))
        for name, recipe in IMAGES.items()
    }
    monkeypatch.setattr(recipes, "IMAGES", old_recipes)
    old_base = images.ensure("base", cache=tmp_path, builder=TreeBuilder())
    old_web = images.ensure("web", cache=tmp_path, builder=TreeBuilder())
    monkeypatch.undo()
    assert images.find("base", cache=tmp_path) is None  # a new recipe is a new version
    base = images.ensure("base", cache=tmp_path, builder=TreeBuilder())
    assert not images.is_current(old_base) and images.is_current(base)
    assert len(images.versions(cache=tmp_path)) == 3
    (tmp_path / ".build.web.0123456789abcdef.crash").mkdir()

    assert images.prune({old_web.rootfs}, cache=tmp_path) == [old_base.rootfs.parent]
    assert images.versions(cache=tmp_path) == [base, old_web]
    assert entries(tmp_path) == sorted([base.rootfs.parent.name, old_web.rootfs.parent.name])
    assert images.prune(cache=tmp_path) == [old_web.rootfs.parent]
    assert images.versions(cache=tmp_path) == [base]


def test_a_tree_with_a_mount_in_it_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leftover = tmp_path / ".build.base.0123456789abcdef.x"
    (leftover / "rootfs" / "proc").mkdir(parents=True)
    mounted = str(leftover / "rootfs" / "proc")
    monkeypatch.setattr(images, "_mounts_under", lambda path: [mounted])
    with pytest.raises(ImageError, match="umount -R"):
        images.ensure("base", cache=tmp_path, builder=TreeBuilder())
    assert leftover.exists()


# mmdebstrap's side, with a stand-in for it on PATH.

TRANSCRIPT = """\
I: automatically chosen mode: root
I: running apt-get update...
Fetched 8941 kB in 1s (14.0 MB/s)
I: downloading packages with apt...
0 upgraded, 69 newly installed, 0 to remove and 0 not upgraded.
Need to get 29.7 MB of archives.
I: extracting archives...
I: installing essential packages...
I: installing remaining packages inside the chroot...
0 upgraded, 106 newly installed, 0 to remove and 0 not upgraded.
Need to get 20.1 MB/63.4 MB of archives.
"""


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `mmdebstrap` that records its arguments in argv.json next to it, prints a transcript
    like the real one's (a customize-hook line for each hook) and makes the target directory;
    it fails like the real one when a file `fail` is next to it, and (once) when a file `slow`
    is, it removes it and waits for a file `go` (30 s at most) before it goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import json, os, sys, time
            here = {str(bin_dir)!r}
            args = sys.argv[1:]
            json.dump({{"argv": args, "path": os.environ["PATH"]}}, open(here + "/argv.json", "w"))
            print({TRANSCRIPT!r}, end="", flush=True)
            if os.path.exists(here + "/fail"):
                print("E: Unable to locate package no-such-thing")
                print("E: mmdebstrap failed to run")
                sys.exit(25)
            for arg in args:
                if arg.startswith("--customize-hook="):
                    print("I: running --customize-hook in shell: sh -c " + arg[17:40])
            print("I: cleaning package lists and apt cache...")
            positional = [a for a in args if not a.startswith("--")]
            if os.path.exists(here + "/slow"):  # once
                os.unlink(here + "/slow")
                deadline = time.monotonic() + 30
                while not os.path.exists(here + "/go") and time.monotonic() < deadline:
                    time.sleep(0.01)
            os.mkdir(positional[1])
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv(images.MIRROR_ENV, raising=False)
    monkeypatch.delenv(images.SECURITY_MIRROR_ENV, raising=False)
    return bin_dir


def test_mmdebstraps_output_becomes_progress_lines(fake_mmdebstrap: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    images.ensure("web", cache=tmp_path / "images", progress=lines.append)
    assert [line.removeprefix("image web: ") for line in lines[:-1]] == [
        "building from http://deb.debian.org/debian with mmdebstrap",
        "resolving packages",
        "downloading 69 essential packages (29.7 MB)",
        "installing the essential packages",
        "downloading and installing 106 more packages (63.4 MB)",
        "customizing (pip install ruff)",
        "finishing",
        "cleaning up",
    ]
    assert lines[-1].startswith("image web: ready, ")
    assert "Need to get 29.7 MB" in (tmp_path / "images" / "web.log").read_text()


def test_mmdebstraps_arguments(
    fake_mmdebstrap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = images.ensure("base", cache=tmp_path / "images")
    called = json.loads((fake_mmdebstrap / "argv.json").read_text())
    argv = called["argv"]
    assert "--mode=unshare" in argv and "--variant=minbase" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert include.removeprefix("--include=").split(",") == list(IMAGES["base"].packages)
    positional = [a for a in argv if not a.startswith("--")]
    assert positional[0] == "bookworm" and positional[1].endswith("/rootfs")
    assert Path(positional[1]).parent.name.startswith(".build.base.") and image.rootfs.is_dir()
    assert positional[2:] == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert called["path"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    monkeypatch.setenv(images.MIRROR_ENV, "http://mirror.example/debian")
    images.ensure("web", cache=tmp_path / "images")
    argv = json.loads((fake_mmdebstrap / "argv.json").read_text())["argv"]
    assert "deb http://mirror.example/debian-security bookworm-security main" in argv
    monkeypatch.setenv(images.SECURITY_MIRROR_ENV, "")
    images.ensure("jupyter", cache=tmp_path / "images", mirror="http://other.example/deb")
    argv = json.loads((fake_mmdebstrap / "argv.json").read_text())["argv"]
    assert [a for a in argv if a.startswith("deb ")] == [
        "deb http://other.example/deb bookworm main",
        "deb http://other.example/deb bookworm-updates main",
    ]


def test_a_failed_mmdebstrap_says_why_and_leaves_nothing(
    fake_mmdebstrap: Path, tmp_path: Path
) -> None:
    (fake_mmdebstrap / "fail").touch()
    cache = tmp_path / "images"
    with pytest.raises(ImageError) as failed:
        images.ensure("base", cache=cache)
    assert "mmdebstrap exited with 25" in failed.value.message
    assert "no-such-thing not in Debian bookworm" in failed.value.message
    assert str(cache / "base.log") in failed.value.message
    assert "E: Unable to locate package no-such-thing" in failed.value.details
    assert entries(cache) == []


def test_a_missing_mmdebstrap_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ImageError, match="apt-get install mmdebstrap"):
        images.ensure("base", cache=tmp_path)
    assert entries(tmp_path) == []


# Real builds, into the machine's cache.


def run_in(image: Image, *command: str) -> str:
    """`command` in the image as the sandbox will run it: the root read-only."""
    argv = ["bwrap", "--ro-bind", str(image.rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--tmpfs", "/tmp", "--setenv", "HOME", "/tmp", "--", *command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.timeout(900)
def test_the_base_image_has_what_the_sandbox_runs_and_is_built_once() -> None:
    lines: list[str] = []
    image = images.ensure("base", progress=lines.append)
    assert image == images.find("base")
    root = image.rootfs
    for path in ("usr/lib/openssh/sftp-server", "usr/bin/rsync", "usr/bin/tmux", "usr/bin/setsid"):
        assert (root / path).is_file(), path
    assert (root / "home").is_dir() and (root / "usr/bin/python3").exists()
    assert (root / "etc/resolv.conf").read_text() == ""  # the host's is not kept
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert "localhost" in (root / "etc/hosts").read_text()
    assert sorted(p.name for p in (root / "var/lib/apt/lists").iterdir()) <= ["lock", "partial"]
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))
    assert not list((root / "tmp").iterdir())
    assert run_in(image, "python3", "--version").startswith("Python 3.11")
    assert "rsync" in run_in(image, "rsync", "--version")
    run_in(image, "tmux", "-V")
    run_in(image, "git", "--version")

    builder = TreeBuilder(fail=True)
    again = images.ensure("base", builder=builder)
    assert again == image and builder.builds == 0
    assert again.rootfs.stat().st_ino == root.stat().st_ino


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_web_image_has_node_python_and_ruff() -> None:
    image = images.ensure("web")
    assert run_in(image, "node", "--version").startswith("v18.")
    assert run_in(image, "python3", "--version").startswith("Python 3.11")
    assert run_in(image, "ruff", "--version").strip() == f"ruff {images.RUFF_VERSION}"
    assert not (image.rootfs / recipes.BUILD_CA.lstrip("/")).exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_jupyter_image_has_jupyter_and_numpy() -> None:
    image = images.ensure("jupyter")
    run_in(image, "python3", "-c", "import numpy")
    assert "notebook" in run_in(image, "jupyter", "--version")
    assert run_in(image, "jupyter", "notebook", "--version").strip().startswith("6.")


def test_leeward_image_build_and_list(
    fake_mmdebstrap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path / "images"))

    def leeward(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "leeward.cli", "image", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    refused = leeward("build", "web", "nope")
    assert refused.returncode == 1 and "the images are base, web, jupyter" in refused.stderr
    assert images.find("web") is None  # nothing built when a name is wrong
    built = leeward("build", "web")
    assert built.returncode == 0, built.stderr
    web = images.find("web")
    assert web is not None and built.stdout.split() == ["web", str(web.rootfs)]
    assert "image web: ready" in built.stderr
    listed = leeward("list").stdout.splitlines()
    assert listed[0] == f"Cache: {tmp_path / 'images'}"
    assert [line.split()[:2] for line in listed[1:]] == [
        [name, recipe.digest[:16]] for name, recipe in IMAGES.items()
    ]
    assert "not built" in listed[1] and str(web.rootfs) in listed[2]


def test_a_builder_killed_mid_build_holds_the_lock_until_its_mmdebstrap_ends(
    fake_mmdebstrap: Path, tmp_path: Path
) -> None:
    """mmdebstrap outlives a builder killed with SIGKILL and goes on writing into the temporary
    tree: it inherits the lock, so the next builder waits for it before it removes that tree."""
    (fake_mmdebstrap / "slow").touch()
    cache = tmp_path / "images"
    code = (
        "import pathlib, leeward.sandbox.images as i; "
        f"i.ensure('base', cache=pathlib.Path({str(cache)!r}))"
    )
    killed = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while (fake_mmdebstrap / "slow").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert [p.name.startswith(".build.base.") for p in cache.iterdir() if p.is_dir()] == [True]

    # The orphaned mmdebstrap is held (until `go`): the next builder must wait for it.
    lines: list[str] = []
    done: list[Image] = []
    waiter = threading.Thread(
        target=lambda: done.append(images.ensure("base", cache=cache, progress=lines.append))
    )
    waiter.start()
    deadline = time.monotonic() + 30
    while not lines:
        assert time.monotonic() < deadline, "the next builder said nothing"
        time.sleep(0.01)
    assert lines[0] == "image base: waiting for the build another process started"
    (fake_mmdebstrap / "go").touch()
    waiter.join(60)
    image = done[0]
    assert entries(cache) == [image.rootfs.parent.name]
