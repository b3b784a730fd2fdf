"""How an image is built: mmdebstrap from Debian's packages, with the recipe's hooks, reporting
its stages as progress lines (leeward.sandbox.images calls `build_rootfs`)."""

from __future__ import annotations

import contextvars
import os
import re
import shlex
import shutil
import subprocess
from collections import deque
from pathlib import Path

from leeward.sandbox.recipes import (
    BUILD_CA,
    CA_VARIABLES,
    DPKG_OPTIONS,
    FINISH_HOOK,
    ImageError,
    Progress,
    Recipe,
)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "LEEWARD_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "LEEWARD_DEBIAN_SECURITY_MIRROR"
"""Where `<suite>-security` comes from. Unset: next to the mirror when its URL ends in /debian
(http://deb.debian.org/debian-security), else none. Set but empty: none."""
_STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HELD_LOCK: contextvars.ContextVar[int] = contextvars.ContextVar("leeward_image_lock")
"""The descriptor of the name lock this thread holds while it builds. mmdebstrap inherits it:
if this process dies, the lock stays held until mmdebstrap (orphaned, still writing into the
temporary tree) ends too, so the next builder never removes a tree that is being written."""


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
            pass_fds=[fd] if (fd := HELD_LOCK.get(None)) is not None else [],
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
