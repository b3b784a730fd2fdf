"""What an image holds: its `Recipe` (a Debian suite, packages, commands run on the finished
tree), the recipes of the images environments run on (`IMAGES`), and a recipe's `digest`, which
names a version: the recipe's canonical JSON and `FORMAT`. How an image is built is
`leeward.sandbox.mmdebstrap`; where built images are kept, `leeward.sandbox.images`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

FORMAT = 1
"""Part of every digest: bump it when how an image is built changes in a way the digest does not
see otherwise (mmdebstrap's options, the sources) so that every image is rebuilt. A recipe's
packages and hooks, `DPKG_OPTIONS` and `FINISH_HOOK` are in the digest themselves."""


Progress = Callable[[str], None]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*")


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


def recipe(name: str) -> Recipe:
    """The recipe called `name`; `ImageError` naming the known ones if there is none."""
    try:
        return IMAGES[name]
    except KeyError:
        known = ", ".join(IMAGES)
        raise ImageError(f"there is no image called {name!r}: the images are {known}") from None
