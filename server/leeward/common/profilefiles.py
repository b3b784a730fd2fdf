"""Which files a profile may hold, and finding them in a home.

The fleet applies the checks to every upload (it is the authority); the agent and the CLI apply
the same ones before sending, and also check what only the file system shows: symlinks that
point out of the home, devices, sockets and fifos, files too large to read. Every refusal is a
`Refusal` whose sentence says what was refused, why, and what to do.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from leeward_protocol.fleet import Refusal
from leeward_protocol.profile import FileUpload
from leeward_protocol.userconfig import check_home_path

CONFLICT_MARK = ".leeward-conflict-"
"""Conflict copies (`FILE.leeward-conflict-<env>-<time>`) are the user's to read, never synced."""

OWN_STATE = ".local/state/leeward"
"""The agent's own records in the home (sync state, setup logs): never part of a profile."""

MAX_PATH_BYTES = 1024
SCAN_CAP = 50_000
"""Entries one scan looks at, at most: a tracked directory with millions of files is refused,
not read."""

_SECRETS: list[tuple[re.Pattern[bytes], str]] = [
    (re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), "a private key"),
    (re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}"), "a GitHub token"),
    (re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{50,}"), "a GitHub token"),
    (re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
    (re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key"),
    (re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(rb"\bsk_live_[A-Za-z0-9]{16,}"), "a Stripe secret key"),
    (re.compile(rb"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"), "an API secret key"),
    (re.compile(rb"\bnpm_[A-Za-z0-9]{36}\b"), "an npm token"),
    (re.compile(rb":_authToken=\S{8,}"), "a package registry token"),
    (re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b"), "a Google API key"),
    (re.compile(rb"\blw[at]_[A-Za-z0-9_-]{40,}"), "a Leeward token"),
]


UPLOAD_CONTENT_BYTES = 5 * 1024 * 1024
"""The most file content (base64, as sent) in one upload: under the fleet's default limit on an
upload's body (`profile_store.max_upload_bytes`, 8 MiB) with room for the JSON around it. (The
agent used to count 6 MiB before base64: a full batch was 8 MiB of base64 alone, and refused.)"""


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_files: int
    max_total_bytes: int


@dataclass(frozen=True)
class LocalFile:
    path: str
    sha256: str
    size: int
    mode: int
    modified_at: datetime
    data: bytes

    def upload(self, base_sha256: str | None = None) -> FileUpload:
        """This file as an upload carries it; `base_sha256`: the version this edit is of."""
        return FileUpload(
            path=self.path,
            content=base64.b64encode(self.data).decode(),
            mode=self.mode,
            modified_at=self.modified_at,
            base_sha256=base_sha256,
        )


def sent_size(size: int) -> int:
    """The bytes a file of `size` takes in an upload (base64)."""
    return 4 * ((size + 2) // 3)


def upload_batches(
    files: Sequence[LocalFile], limit: int = UPLOAD_CONTENT_BYTES
) -> list[list[LocalFile]]:
    """`files`, in order, split into uploads whose contents stay under `limit` (a file larger
    than that goes alone). Always at least one, empty when there are no files: removals alone
    still make a request."""
    batches: list[list[LocalFile]] = [[]]
    size = 0
    for f in files:
        if batches[-1] and size + sent_size(f.size) > limit:
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += sent_size(f.size)
    return batches


def refusal(path: str, code: str, reason: str) -> Refusal:
    return Refusal.model_validate({"path": path, "code": code, "reason": reason})


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(
        path == p or fnmatch.fnmatchcase(path, p) or path.startswith(p + "/") for p in patterns
    )


def check_path(path: str) -> Refusal | None:
    """A profile path: relative to the home, inside it, and not one of Leeward's own files."""
    try:
        check_home_path(path)
    except ValueError:
        return refusal(
            path,
            "escapes-home",
            f"{path!r} is not a path inside the home: profiles keep files relative to the home "
            "(like `.bashrc` or `.config/git/ignore`), never absolute paths or `..`",
        )
    if path != path.rstrip("/") or any(ord(c) < 32 for c in path):
        return refusal(path, "escapes-home", f"{path!r} has a trailing `/` or control characters")
    if len(path.encode()) > MAX_PATH_BYTES:
        return refusal(path, "escapes-home", f"the path is over {MAX_PATH_BYTES} bytes long")
    if CONFLICT_MARK in path.rsplit("/", 1)[-1]:
        return refusal(
            path,
            "bad-content",
            f"{path} is a conflict copy; read it, merge what you need into the file, delete it",
        )
    if path == OWN_STATE or path.startswith(OWN_STATE + "/"):
        return refusal(path, "bad-content", f"{path} is Leeward's own state in the environment")
    return None


def too_large(path: str, size: int, limit: int) -> Refusal:
    return refusal(
        path,
        "too-large",
        f"{path} is {_size(size)}, over the profile's limit of {_size(limit)} per file; "
        "keep large files out of tracked paths (or in a repository)",
    )


def check_content(
    path: str,
    data: bytes,
    *,
    allow_secrets: Iterable[str] = (),
    allow_binary: Iterable[str] = (),
) -> Refusal | None:
    """Refuse what looks like a private key or a token, and what is not text, unless the
    user's config allows that path (`allow_secrets`, `allow_binary`: glob patterns)."""
    if not _matches(path, allow_binary):
        head = data[:65536]
        if b"\x00" in head or not _is_text(head):
            return refusal(
                path,
                "binary",
                f"{path} is not text (profiles hold configuration); "
                f'if it belongs in every environment, add "{path}" to allow_binary in '
                "~/.config/leeward/config.toml",
            )
    if not _matches(path, allow_secrets):
        for pattern, what in _SECRETS:
            if pattern.search(data):
                return refusal(
                    path,
                    "secret",
                    f"{path} looks like it holds {what}; secrets do not go in profiles. If "
                    f'it must follow you, add "{path}" to allow_secrets in '
                    "~/.config/leeward/config.toml",
                )
    return None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def over_limits(
    current: dict[str, int], candidates: list[LocalFile], limits: Limits
) -> tuple[list[LocalFile], list[Refusal]]:
    """Keep the profile within its file count and total size. `current` maps the profile's
    paths to their sizes. When the new paths would take it over the file limit, they are
    refused by directory, the directory with the most new files first, until the rest fit (a
    directory of junk is refused whole, and a new rc file next to it still goes in); then
    growing files are refused, largest first, until the total fits."""
    new = [c for c in candidates if c.path not in current]
    refused: list[Refusal] = []
    kept = candidates
    count = len(current) + len(new)
    if new and count > limits.max_files:
        groups: dict[str, list[LocalFile]] = {}
        for c in new:
            groups.setdefault(c.path.rpartition("/")[0] or ".", []).append(c)
        dropped: set[str] = set()
        for where, group in sorted(groups.items(), key=lambda item: -len(item[1])):
            if count - len(dropped) <= limits.max_files:
                break
            dropped.update(c.path for c in group)
            refused.append(
                refusal(
                    where,
                    "too-many-files",
                    f"{len(group)} new files under {where} would bring the profile to "
                    f"{count} files, over its limit of {limits.max_files}; none of them was "
                    "stored. Stop tracking that directory, or remove files from it",
                )
            )
        kept = [c for c in candidates if c.path not in dropped]
    sizes = dict(current)
    sizes.update({c.path: c.size for c in kept})
    total = sum(sizes.values())
    if total > limits.max_total_bytes:
        growing = sorted(
            (c for c in kept if c.size > current.get(c.path, 0)), key=lambda c: -c.size
        )
        too_big: set[str] = set()
        for c in growing:
            if total <= limits.max_total_bytes:
                break
            total -= c.size - current.get(c.path, 0)
            too_big.add(c.path)
            refused.append(
                refusal(
                    c.path,
                    "profile-too-large",
                    f"{c.path} ({_size(c.size)}) would take the profile over its limit of "
                    f"{_size(limits.max_total_bytes)} in all; make room or stop tracking it",
                )
            )
        kept = [c for c in kept if c.path not in too_big]
    return kept, refused


def link_target(home: Path, link: Path, alias: str | None = None) -> Path:
    """Where the symbolic link `link` leads, resolved. `alias` is the home's own path where the
    environment sees it (`/home/OWNER` in a sandbox, the home being elsewhere on the host): an
    absolute target under it is in the home, as it is for the environment's programs."""
    path = link
    if alias is not None:
        for _ in range(40):  # the kernel's own limit on a chain of links
            if not path.is_symlink():
                break
            target = os.readlink(path)
            if target == alias or target.startswith(alias.rstrip("/") + "/"):
                path = home / target[len(alias) :].lstrip("/")
            else:
                path = path.parent / target  # relative: from the link's directory
    return Path(os.path.realpath(path))


def read_file(
    home: Path, path: str, limits: Limits, alias: str | None = None
) -> tuple[LocalFile | None, Refusal | None]:
    """One regular file (or a symlink to one inside the home) as a profile candidate."""
    full = home / path
    try:
        info = full.lstat()
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(info.st_mode):
        target = link_target(home, full, alias)
        if not target.is_relative_to(home.resolve()):
            return None, refusal(
                path,
                "symlink",
                f"{path} is a symlink to {os.readlink(full)}, outside the home; profiles keep "
                "only files inside the home",
            )
        try:
            info = target.stat()
        except OSError:
            return None, None  # a dangling link: nothing to keep
        full = target
    if stat.S_ISDIR(info.st_mode):
        return None, None
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "a fifo"
            if stat.S_ISFIFO(info.st_mode)
            else "a device file"
        )
        return None, refusal(path, "not-a-file", f"{path} is {kind}; profiles keep regular files")
    if info.st_size > limits.max_file_bytes:
        return None, too_large(path, info.st_size, limits.max_file_bytes)
    try:
        with open(full, "rb") as f:
            data = f.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return None, refusal(path, "not-a-file", f"{path} cannot be read: {exc.strerror}")
    if len(data) > limits.max_file_bytes:  # it grew while we looked
        return None, too_large(path, len(data), limits.max_file_bytes)
    return (
        LocalFile(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            mode=stat.S_IMODE(info.st_mode),
            modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
            data=data,
        ),
        None,
    )


def scan(
    home: Path,
    tracked: Iterable[str],
    limits: Limits,
    *,
    allow_secrets: Iterable[str] = (),
    allow_binary: Iterable[str] = (),
    alias: str | None = None,
) -> tuple[list[LocalFile], list[Refusal]]:
    """Every file under the tracked paths (files or directories, relative to `home`) that a
    profile may hold, and a refusal for each that it may not. Count and total size are not
    checked here: they depend on the profile (`over_limits`)."""
    allow_secrets, allow_binary = list(allow_secrets), list(allow_binary)
    files: dict[str, LocalFile] = {}
    refused: list[Refusal] = []
    seen = 0
    for path in _walk(home, tracked, refused, alias):
        seen += 1
        if seen > SCAN_CAP:
            refused.append(
                refusal(
                    path,
                    "too-many-files",
                    f"the tracked paths hold more than {SCAN_CAP} entries; the rest (from "
                    f"{path} on) were not read. Stop tracking the directories that hold them",
                )
            )
            break
        if path in files or check_path(path) is not None:
            continue
        found, refused_one = read_file(home, path, limits, alias)
        if refused_one is not None:
            refused.append(refused_one)
        if found is None:
            continue
        problem = check_content(
            path, found.data, allow_secrets=allow_secrets, allow_binary=allow_binary
        )
        if problem is not None:
            refused.append(problem)
            continue
        files[path] = found
    return sorted(files.values(), key=lambda f: f.path), refused


def _walk(
    home: Path, tracked: Iterable[str], refused: list[Refusal], alias: str | None = None
) -> Iterator[str]:
    """Relative paths of the entries under the tracked paths; directories are not followed
    through symlinks (a symlinked directory out of the home is refused)."""
    root = home.resolve()
    for top in dict.fromkeys(tracked):
        if check_path(top) is not None:
            continue
        full = home / top
        if full.is_symlink() and full.is_dir():
            target = link_target(home, full, alias)
            if not target.is_relative_to(root):
                refused.append(
                    refusal(
                        top,
                        "symlink",
                        f"{top} is a symlink to {os.readlink(full)}, outside the home; "
                        "profiles keep only files inside the home",
                    )
                )
            continue
        if not full.is_dir():
            if full.exists() or full.is_symlink():
                yield top
            continue
        for directory, dirnames, filenames in os.walk(full):
            rel = Path(directory).relative_to(home).as_posix()
            for name in sorted(dirnames):
                sub = Path(directory) / name
                if sub.is_symlink():
                    dirnames.remove(name)
                    target = link_target(home, sub, alias)
                    if not target.is_relative_to(root):
                        refused.append(
                            refusal(
                                f"{rel}/{name}",
                                "symlink",
                                f"{rel}/{name} is a symlink to {os.readlink(sub)}, outside the "
                                "home; profiles keep only files inside the home",
                            )
                        )
                elif rel == OWN_STATE or f"{rel}/{name}" == OWN_STATE:
                    dirnames.remove(name)
            dirnames.sort()
            for name in sorted(filenames):
                yield f"{rel}/{name}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
