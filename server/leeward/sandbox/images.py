"""Images: the Debian root filesystems environments run on, built with mmdebstrap, cached once
per machine and shared read-only by every sandbox of an image (bwrap --ro-bind ROOTFS /).

A `Recipe` says what an image holds (a suite, packages, commands run on the finished tree); its
`digest` (the recipe's canonical JSON and `FORMAT`) names the version. `ensure(name)` returns
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
import contextvars
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from leeward.common.files import write_atomic

FORMAT = 1
"""Part of every digest: bump it when how an image is built changes in a way the digest does not
see otherwise (mmdebstrap's options, the sources) so that every image is rebuilt. A recipe's
packages and hooks, `DPKG_OPTIONS` and `FINISH_HOOK` are in the digest themselves."""

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "LEEWARD_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "LEEWARD_DEBIAN_SECURITY_MIRROR"
"""Where `<suite>-security` comes from. Unset: next to the mirror when its URL ends in /debian
(http://deb.debian.org/debian-security), else none. Set but empty: none."""
CACHE_ENV = "LEEWARD_IMAGE_CACHE"
ROOT_CACHE = Path("/var/cache/leeward/images")

Progress = Callable[[str], None]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_IMAGE_DIR = re.compile(r"(?P<name>[a-z0-9][a-z0-9-]*)-(?P<short>[0-9a-f]{16})")
_BUILD_PREFIX = ".build."
_TRASH_PREFIX = ".trash."
_STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HELD_LOCK: contextvars.ContextVar[int] = contextvars.ContextVar("leeward_image_lock")
"""The descriptor of the name lock this thread holds while it builds. mmdebstrap inherits it:
if this process dies, the lock stays held until mmdebstrap (orphaned, still writing into the
temporary tree) ends too, so the next builder never removes a tree that is being written."""


class ImageError(Exception):
    """An image could not be found, built or removed. `message` says what failed and what to
    do; `details` (e.g. the last lines of mmdebstrap's output) follow it in `str(error)`."""

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(f"{message}\n{details}" if details else message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Hook:
    """A command run on the finished tree (mmdebstrap's --customize-hook, in `sh` with the root
    filesystem as "$1"; `chroot "$1" ...` runs something inside it). `label` is for progress
    ("customizing (pip install ruff)") and is not part of the digest."""

    label: str
    command: str


@dataclass(frozen=True)
class Recipe:
    """What an image holds: Debian's `suite` (its -updates and -security too) with the minbase
    variant (the Essential packages and apt), `packages` and their dependencies (no
    recommends), then the `customize` hooks in order."""

    name: str
    packages: tuple[str, ...]
    customize: tuple[Hook, ...] = ()
    suite: str = "bookworm"
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"image name {self.name!r}: lowercase letters, digits and '-'")
        for package in self.packages:
            if not _PACKAGE.fullmatch(package):
                raise ValueError(f"image {self.name}: {package!r} is not a Debian package name")
        if not _NAME.fullmatch(self.suite):
            raise ValueError(f"image {self.name}: {self.suite!r} is not a Debian suite")

    def canonical(self) -> dict[str, Any]:
        """What the digest is made of: everything that changes the tree, and nothing else (the
        labels and description do not; the package order does not)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "suite": self.suite,
            "packages": sorted(set(self.packages)),
            "customize": [hook.command for hook in self.customize],
            "dpkg": list(DPKG_OPTIONS),
            "finish": FINISH_HOOK,
        }

    @property
    def digest(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "git",
    "openssh-sftp-server",  # the sandbox runs /usr/lib/openssh/sftp-server for sftp and scp
    "openssh-client",  # `scp -O` runs the image's scp; git over ssh, ssh onwards
    "rsync",  # rsync over ssh runs it on this side
    "procps",
    "tmux",
    "bash",
    "ca-certificates",
    "less",
    "iproute2",
    "curl",
    "util-linux",  # setsid; Essential, named for the sandbox's sake
)
RUFF_VERSION = "0.17.6"

IMAGES: Mapping[str, Recipe] = MappingProxyType(
    {
        recipe.name: recipe
        for recipe in (
            Recipe(
                name="base",
                packages=BASE_PACKAGES,
                description="Python 3, git, ssh's sftp-server, rsync, tmux, curl",
            ),
            Recipe(
                name="web",
                packages=(*BASE_PACKAGES, "nodejs"),
                customize=(
                    Hook(
                        label="pip install ruff",
                        command=(
                            'chroot "$1" python3 -m pip install --break-system-packages'
                            " --no-cache-dir --root-user-action=ignore --no-warn-script-location"
                            f" ruff=={RUFF_VERSION}"
                        ),
                    ),
                ),
                description=f"base, Node.js (Debian's) and ruff {RUFF_VERSION} (PyPI's)",
            ),
            Recipe(
                name="jupyter",
                packages=(*BASE_PACKAGES, "jupyter-notebook", "python3-numpy"),
                description="base, Jupyter Notebook and NumPy (Debian's)",
            ),
        )
    }
)
DEFAULT_IMAGE = "base"

DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
"""No manuals, translations or documentation (there is no `man` in an image), the licences
kept. dpkg keeps these rules in the image (/etc/dpkg/dpkg.cfg.d/99mmdebstrap)."""

BUILD_CA = "/tmp/leeward-build-ca.crt"  # noqa: S108 (the tree's /tmp, emptied after the build)
"""Inside the tree while the hooks run: a copy of the certificates the building machine trusts,
and what `CA_VARIABLES` name. A machine whose egress re-signs TLS (as this project's test
machines' does) can then `pip install` in a hook; the copy is removed with /tmp's contents."""
CA_VARIABLES = (
    "PIP_CERT",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)

FINISH_HOOK = (
    f'set -e\nrm -f "$1{BUILD_CA}"\n'
    + r"""
: > "$1/etc/resolv.conf"
echo localhost > "$1/etc/hostname"
chmod 644 "$1/etc/resolv.conf" "$1/etc/hostname"
if [ ! -e "$1/etc/hosts" ]; then
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$1/etc/hosts"
fi
mkdir -p "$1/home"
rm -rf "$1/root/.cache"
rm -f "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old
"""
)
"""The last hook of every image. mmdebstrap copies the host's /etc/resolv.conf and /etc/hostname
in: they become placeholders (empty; "localhost"), and /etc/hosts (minbase has none) a generic
one, so that the sandbox has files to bind its own over on a read-only root."""


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


def recipe(name: str) -> Recipe:
    """The recipe called `name`; `ImageError` naming the known ones if there is none."""
    try:
        return IMAGES[name]
    except KeyError:
        known = ", ".join(IMAGES)
        raise ImageError(f"there is no image called {name!r}: the images are {known}") from None


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


def sources(suite: str, mirror: str) -> list[str]:
    """The apt sources of an image: the suite and its -updates from `mirror`, -security from
    $LEEWARD_DEBIAN_SECURITY_MIRROR or next to a mirror whose URL ends in /debian."""
    if not mirror or any(c.isspace() for c in mirror):
        raise ImageError(f"the Debian mirror {mirror!r} is not a URL: set {MIRROR_ENV} to one")
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    security = os.environ.get(SECURITY_MIRROR_ENV)
    if security is None and mirror.rstrip("/").endswith("/debian"):
        security = mirror.rstrip("/") + "-security"
    if security:
        lines.append(f"deb {security} {suite}-security main")
    return lines


def build_rootfs(
    recipe: Recipe, rootfs: Path, *, mirror: str, progress: Progress, log: Path
) -> None:
    """The builder: mmdebstrap in unshare mode (for root, only its own mount, pid and ipc
    namespaces, so that nothing it mounts outlives it; for others, a user namespace too, which
    needs /etc/subuid and /etc/subgid entries), its output read as it comes."""
    executable = shutil.which("mmdebstrap")
    if executable is None:
        raise ImageError(
            "mmdebstrap is not installed: apt-get install mmdebstrap (scripts/setup does it)"
        )
    env = _build_env()
    prepare = []
    if host_ca := _host_ca_bundle():
        prepare = [f'--customize-hook=cp {shlex.quote(host_ca)} "$1{BUILD_CA}"']
        env.update(dict.fromkeys(CA_VARIABLES, BUILD_CA))
    argv = [
        executable,
        "--verbose",
        "--mode=unshare",
        "--variant=minbase",
        "--format=directory",
        f"--include={','.join(recipe.packages)}",
        '--aptopt=Acquire::Languages "none"',
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        *prepare,
        *(f"--customize-hook={hook.command}" for hook in recipe.customize),
        f"--customize-hook={FINISH_HOOK}",
        recipe.suite,
        str(rootfs),
        *sources(recipe.suite, mirror),
    ]
    progress(f"building from {mirror} with mmdebstrap")
    stages = _Stages(recipe, progress, prepared=bool(prepare))
    tail: deque[str] = deque(maxlen=25)
    errors: list[str] = []
    with log.open("w", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        with subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
            bufsize=1,
            pass_fds=[fd] if (fd := _HELD_LOCK.get(None)) is not None else [],
        ) as process:
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    out.write(line)
                    text = line.rstrip()
                    tail.append(text)
                    if text.startswith("E: ") and len(errors) < 10:
                        errors.append(text)
                    stages.feed(text)
                returncode = process.wait()
            except BaseException:
                _stop(process)
                raise
    if returncode != 0:
        shown = "\n".join([line for line in errors if line not in tail] + list(tail))
        raise ImageError(
            f"building image {recipe.name} failed (mmdebstrap exited with {returncode}): "
            f"{_advice(recipe, mirror, shown)}; its whole output is in {log}",
            details=shown,
        )


class _Stages:
    """Short progress lines from mmdebstrap's verbose output: its "I:" lines and apt's counts."""

    _COUNT = re.compile(r"\d+ upgraded, (\d+) newly installed")
    _SIZE = re.compile(r"Need to get (?:\S+ \S+/)?(\S+ \S+) of archives")

    def __init__(self, recipe: Recipe, progress: Progress, *, prepared: bool) -> None:
        labels = [hook.label for hook in recipe.customize]
        self._labels = ["preparing"] * prepared + labels + ["finishing"]
        self._hooks = 0
        self._say = progress
        self._count = "some"
        self._phase = "start"

    def feed(self, line: str) -> None:
        if line.startswith("I: running apt-get update"):
            self._say("resolving packages")
        elif line.startswith("I: downloading packages"):
            self._phase = "essential"
        elif line.startswith("I: installing essential packages"):
            self._say("installing the essential packages")
        elif line.startswith("I: installing remaining packages"):
            self._phase = "remaining"
        elif line.startswith("I: running --customize-hook"):
            label = self._labels[min(self._hooks, len(self._labels) - 1)]
            self._hooks += 1
            if label == "finishing":
                self._say(label)
            elif label != "preparing":
                self._say(f"customizing ({label})")
        elif line.startswith("I: cleaning package lists"):
            self._say("cleaning up")
        elif match := self._COUNT.match(line):
            self._count = match[1]
        elif match := self._SIZE.match(line):
            if self._phase == "essential":
                self._say(f"downloading {self._count} essential packages ({match[1]})")
            else:
                self._say(f"downloading and installing {self._count} more packages ({match[1]})")


def _advice(recipe: Recipe, mirror: str, output: str) -> str:
    """What to do, from what mmdebstrap said."""
    missing = re.findall(
        r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation", output
    )
    if missing:
        names = ", ".join(sorted({a or b for a, b in missing}))
        return f"{names} not in Debian {recipe.suite}: fix the recipe in leeward/sandbox/images.py"
    if re.search(
        r"Could not resolve|Temporary failure resolving|Failed to fetch|Unable to connect|"
        r"Connection failed|Could not connect",
        output,
    ):
        return f"is the mirror {mirror} reachable? set {MIRROR_ENV} to one that is"
    if os.geteuid() != 0 and re.search(r"subuid|subgid|newuidmap|unshare|namespace", output):
        user = os.environ.get("USER", "you")
        return (
            "mmdebstrap --mode=unshare needs unprivileged user namespaces and /etc/subuid and "
            f"/etc/subgid entries for {user} (usermod --add-subuids 100000-165535 "
            f"--add-subgids 100000-165535 {user}); or build the images as root"
        )
    if "No space left" in output:
        return "the disk is full: free some space (see docs/images.md on pruning old images)"
    return "see the lines below"


def _host_ca_bundle() -> str | None:
    """The certificates this machine trusts ($SSL_CERT_FILE, else Debian's bundle), if any."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def _build_env() -> dict[str, str]:
    """mmdebstrap's environment: a standard PATH (the hooks' `chroot "$1" pip` must find the
    image's, not a virtualenv's), the C locale (its output is parsed), and any proxy."""
    env = {"PATH": _STANDARD_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    for key in ("HOME", "USER", "LOGNAME", "SOURCE_DATE_EPOCH", "PIP_INDEX_URL"):
        if key in os.environ:
            env[key] = os.environ[key]
    for key in ("http_proxy", "https_proxy", "no_proxy"):
        for variant in (key, key.upper()):
            if variant in os.environ:
                env[variant] = os.environ[variant]
    return env


def _stop(process: subprocess.Popen[str]) -> None:
    """End an interrupted mmdebstrap: SIGTERM (it unmounts and cleans up), then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        token = _HELD_LOCK.set(fd)
        try:
            yield True
        finally:
            _HELD_LOCK.reset(token)
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
