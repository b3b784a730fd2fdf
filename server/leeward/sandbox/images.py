"""Images: the Debian root filesystems environments run on, built with mmdebstrap, cached once
per machine and shared read-only by every sandbox of an image (bwrap --ro-bind ROOTFS /).

A `Recipe` (leeward.sandbox.recipes) says what an image holds; its `digest` names the version,
and mmdebstrap builds it (leeward.sandbox.mmdebstrap). This module keeps the built versions, and
re-exports both neighbours' names for its callers. `ensure(name)` returns
the current version of an image, building it when it is missing: into a temporary directory
next to the others, renamed into place only when complete, under a lock per image name so that
concurrent builders (threads or processes) build once. Old versions stay where they are (a
running sandbox keeps its image); `prune` removes them when the caller says nothing uses them.

The cache (`cache_dir()`):

    <cache>/<name>-<digest[:16]>/rootfs/       the root filesystem
    <cache>/<name>-<digest[:16]>/image.json    name, digest, recipe, built_at, size, build time
    <cache>/.<name>.lock                       held while an image of that name is built
    <cache>/<name>.log                         the whole output of the last build of that name
    <cache>/.build.<name>.<digest[:16]>.XXXX/  a build under way (or one that crashed)

See docs/images.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from leeward.common.files import write_atomic
from leeward.sandbox.mmdebstrap import (
    DEFAULT_MIRROR,
    HELD_LOCK,
    MIRROR_ENV,
    SECURITY_MIRROR_ENV,
    build_rootfs,
)
from leeward.sandbox.recipes import (
    DEFAULT_IMAGE,
    FORMAT,
    IMAGES,
    RUFF_VERSION,
    Hook,
    ImageError,
    Progress,
    Recipe,
    recipe,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_IMAGE",
    "DEFAULT_MIRROR",
    "FORMAT",
    "IMAGES",
    "MIRROR_ENV",
    "RUFF_VERSION",
    "SECURITY_MIRROR_ENV",
    "Builder",
    "Hook",
    "Image",
    "ImageError",
    "Progress",
    "Recipe",
    "build_rootfs",
    "cache_dir",
    "ensure",
    "find",
    "is_current",
    "prune",
    "recipe",
    "versions",
]

CACHE_ENV = "LEEWARD_IMAGE_CACHE"
ROOT_CACHE = Path("/var/cache/leeward/images")
_IMAGE_DIR = re.compile(r"(?P<name>[a-z0-9][a-z0-9-]*)-(?P<short>[0-9a-f]{16})")
_BUILD_PREFIX = ".build."
_TRASH_PREFIX = ".trash."


@dataclass(frozen=True)
class Image:
    """A built version of an image; `rootfs` is complete and is never changed."""

    name: str
    digest: str
    rootfs: Path
    size_bytes: int


class Builder(Protocol):
    """Makes the root filesystem of `recipe` at `rootfs` (which does not exist yet; its parent
    does), reporting stages to `progress` and its whole output to `log`; raises `ImageError`."""

    def __call__(
        self, recipe: Recipe, rootfs: Path, *, mirror: str, progress: Progress, log: Path
    ) -> None: ...


def cache_dir() -> Path:
    """Where images are kept: $LEEWARD_IMAGE_CACHE, else /var/cache/leeward/images for root,
    else ~/.cache/leeward/images."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return ROOT_CACHE
    return Path.home() / ".cache" / "leeward" / "images"


def find(name: str, *, cache: Path | None = None) -> Image | None:
    """The current version of image `name` if it is built; None if not (nothing is built)."""
    wanted = recipe(name)
    found = _read(_image_dir(cache or cache_dir(), wanted))
    return found if found is not None and found.digest == wanted.digest else None


def ensure(
    name: str,
    *,
    cache: Path | None = None,
    progress: Progress | None = None,
    mirror: str | None = None,
    builder: Builder | None = None,
) -> Image:
    """The current version of image `name`, built first if it is missing (blocking: about half
    a minute to a few minutes; run it in a thread). While another thread or process builds it,
    waits for that build. `mirror`: the Debian mirror, else $LEEWARD_DEBIAN_MIRROR, else
    deb.debian.org. `builder` is mmdebstrap's unless given (tests give their own)."""
    wanted = recipe(name)
    root = cache or cache_dir()
    if (found := find(name, cache=root)) is not None:
        return found
    say = _prefixed(name, progress)
    _make_cache(root)
    with _lock(root, name, say):
        if (found := find(name, cache=root)) is not None:
            return found
        _remove_leftovers(root, name)
        source = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
        return _build(wanted, root, source, say, builder or build_rootfs)


def versions(*, cache: Path | None = None) -> list[Image]:
    """Every built version in the cache, current or not, by name then age (oldest first)."""
    root = cache or cache_dir()
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    found = [image for entry in entries if (image := _read(entry)) is not None]
    return sorted(found, key=lambda image: (image.name, _mtime(image.rootfs.parent)))


def is_current(image: Image) -> bool:
    """Whether `image` is the version its recipe makes today."""
    wanted = IMAGES.get(image.name)
    return wanted is not None and wanted.digest == image.digest


def prune(keep: Iterable[Path] = (), *, cache: Path | None = None) -> list[Path]:
    """Removes every version that is not current and not in `keep` (image directories or their
    rootfs), and what crashed builds left; returns the directories removed. A sandbox running on
    a version would lose its files: the caller keeps the versions in use."""
    root = cache or cache_dir()
    kept = {os.path.realpath(path) for path in keep}
    removed: list[Path] = []
    for image in versions(cache=root):
        directory = image.rootfs.parent
        if (
            is_current(image)
            or {os.path.realpath(directory), os.path.realpath(image.rootfs)} & kept
        ):
            continue
        trash = root / f"{_TRASH_PREFIX}{image.name}.{directory.name}.{os.urandom(4).hex()}"
        directory.rename(trash)  # gone at once for readers; the files go next
        _remove_tree(trash)
        removed.append(directory)
    names = {entry.name.split(".")[2] for entry in _leftovers(root)}
    for name in names:
        with _lock(root, name, None, wait=False) as held:
            if held:
                _remove_leftovers(root, name)
    return removed


# Building.


def _build(recipe: Recipe, root: Path, mirror: str, say: Progress, builder: Builder) -> Image:
    digest = recipe.digest
    prefix = f"{_BUILD_PREFIX}{recipe.name}.{digest[:16]}."
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    started = time.monotonic()
    try:
        os.chmod(work, 0o755)  # noqa: S103 (mkdtemp's 0700 would keep sandboxes' users out)
        rootfs = work / "rootfs"
        builder(recipe, rootfs, mirror=mirror, progress=say, log=root / f"{recipe.name}.log")
        if not rootfs.is_dir():
            raise ImageError(f"building image {recipe.name} made no root filesystem at {rootfs}")
        size = _disk_usage(rootfs)
        seconds = time.monotonic() - started
        record = {
            "name": recipe.name,
            "digest": digest,
            "recipe": {**dataclasses.asdict(recipe), "canonical": recipe.canonical()},
            "built_at": datetime.now(UTC).isoformat(),
            "size_bytes": size,
            "build_seconds": round(seconds, 1),
            "mirror": mirror,
        }
        write_atomic(work / "image.json", json.dumps(record, indent=2) + "\n", durable=False)
        os.sync()  # the whole tree on the disk before it appears under its name
        final = _image_dir(root, recipe)
        work.rename(final)
        _fsync_dir(root)
    except BaseException:
        with contextlib.suppress(Exception):  # else the next build of this name removes it
            _remove_tree(work)
        raise
    say(f"ready, {size / 1e6:.0f} MB, built in {seconds:.0f} s")
    return Image(name=recipe.name, digest=digest, rootfs=final / "rootfs", size_bytes=size)


# The cache.


def _prefixed(name: str, progress: Progress | None) -> Progress:
    def say(line: str) -> None:
        if progress is not None:
            progress(f"image {name}: {line}")

    return say


def _image_dir(root: Path, recipe: Recipe) -> Path:
    return root / f"{recipe.name}-{recipe.digest[:16]}"


def _read(directory: Path) -> Image | None:
    """The image in `directory` if it is one, complete: its image.json names it."""
    match = _IMAGE_DIR.fullmatch(directory.name)
    if match is None:
        return None
    try:
        record = json.loads((directory / "image.json").read_text())
        image = Image(
            name=str(record["name"]),
            digest=str(record["digest"]),
            rootfs=directory / "rootfs",
            size_bytes=int(record["size_bytes"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if image.name != match["name"] or not image.digest.startswith(match["short"]):
        return None
    return image if image.rootfs.is_dir() else None


def _make_cache(root: Path) -> None:
    try:
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(
            f"cannot create the image cache {root} ({exc.strerror}): "
            f"set {CACHE_ENV} to a directory you can write"
        ) from None


@contextlib.contextmanager
def _lock(root: Path, name: str, say: Progress | None, *, wait: bool = True) -> Iterator[bool]:
    """Holds <cache>/.<name>.lock (flock: separate opens exclude each other, threads too);
    yields whether it is held (without `wait`, False when another holds it)."""
    fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if say is not None:
                say("waiting for the build another process started")
            fcntl.flock(fd, fcntl.LOCK_EX)
        token = HELD_LOCK.set(fd)
        try:
            yield True
        finally:
            HELD_LOCK.reset(token)
    finally:
        os.close(fd)


def _leftovers(root: Path) -> list[Path]:
    try:
        return [
            entry
            for entry in root.iterdir()
            if entry.name.startswith((_BUILD_PREFIX, _TRASH_PREFIX)) and entry.is_dir()
        ]
    except FileNotFoundError:
        return []


def _remove_leftovers(root: Path, name: str) -> None:
    """Removes what crashed builds and prunes of `name` left. Under the name's lock."""
    for entry in _leftovers(root):
        if entry.name.split(".")[2] == name:
            _remove_tree(entry)


def _remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount (a crashed build's /proc or /dev must not be emptied),
    and for non-root through mmdebstrap's user namespace (unshare mode left files that belong
    to subordinate ids)."""
    if not path.exists():
        return
    if mounts := _mounts_under(path):
        raise ImageError(
            f"{path} holds mounts ({', '.join(mounts[:3])}): unmount them "
            f"(umount -R {path}) and remove it"
        )
    try:
        shutil.rmtree(path)
    except PermissionError:
        helper = shutil.which("mmdebstrap")
        if os.geteuid() == 0 or helper is None:
            raise
        subprocess.run([helper, "--unshare-helper", "rm", "-rf", "--", str(path)], check=True)


def _mounts_under(path: Path) -> list[str]:
    base = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [
        re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in lines
    ]
    return [point for point in points if point == base or point.startswith(base + "/")]


def _disk_usage(root: Path) -> int:
    """Bytes on the disk (allocated blocks), hard links once: `du -s --block-size=1`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, files in os.walk(root):
        for entry in (directory, *(os.path.join(directory, n) for n in (*dirs, *files))):
            with contextlib.suppress(OSError):
                st = os.lstat(entry)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
