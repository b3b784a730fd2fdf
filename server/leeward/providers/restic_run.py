"""The mechanics under `leeward.providers.restic`: running restic (and the few programs around
it) and reading its JSON as it comes (the file work of a restore is in `restic_files`).

Every restic runs under `setpriv --pdeathsig KILL`, so that it dies with the process that started
it (a host agent killed with SIGKILL must not leave restic writing a repository behind its back),
and a cancelled caller stops it itself: SIGINT first (restic then removes its lock and stops
where the repository stays sound), SIGKILL after a grace period, and the child reaped either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import re
import signal
import stat
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("leeward.providers.restic")

GRACE_SECONDS = 5.0
"""How long a cancelled child has to stop on SIGINT before SIGKILL."""
DEATH_SIGNAL = ["setpriv", "--pdeathsig", "KILL", "--"]
PLAIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
"""All that programs other than restic see of our environment (never the repository's key)."""
TAIL_LINES = 40
PROGRESS_SECONDS = 0.25
WARNINGS_MAX = 1000
_BACKENDS = re.compile(r"^(sftp|s3|rest|b2|azure|gs|swift|rclone):")


class Repo(Protocol):
    @property
    def location(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def cache_dir(self) -> Path | None: ...


@dataclass
class Outcome:
    """How a process ended: its exit status (negative: the signal), what it printed."""

    code: int = 0
    out: str = ""
    """stdout, unless it went to a line handler or a pipe."""
    err: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    """stderr's last lines."""


def local_path(location: str) -> Path | None:
    """A repository's directory, when it is on a local file system (restic's rule: no backend
    prefix, or `local:`)."""
    if _BACKENDS.match(location):
        return None
    return Path(location.removeprefix("local:")).absolute()


def command(repository: Repo, args: list[str]) -> list[str]:
    """restic's whole command line: never the key (it goes through the environment)."""
    local = local_path(repository.location)  # absolute: restic may run from another directory
    cache = f"--cache-dir={repository.cache_dir}" if repository.cache_dir else "--no-cache"
    return [*DEATH_SIGNAL, "restic", f"--repo={local or repository.location}", cache, *args]


def environment(repository: Repo, extra: dict[str, str] | None = None) -> dict[str, str]:
    """restic's environment: ours without any RESTIC_* (a stray RESTIC_PASSWORD_FILE or
    RESTIC_REPOSITORY of the host's would win or confuse) nor PWD (with it, Go may name the
    working directory by a link's path rather than the one restic's paths use), plus the key.
    Backends' own variables (AWS_*, HOME for sftp's ssh) pass through."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_") and k != "PWD"}
    return {**env, "RESTIC_PASSWORD": repository.password, **(extra or {})}


async def run(
    repository: Repo, args: list[str], *, env: dict[str, str] | None = None, **kw: Any
) -> Outcome:
    """`restic ARGS` to its end (see `spawn` for the rest)."""
    return await spawn(command(repository, args), env=environment(repository, env), **kw)


async def spawn(
    argv: list[str],
    *,
    env: dict[str, str] = PLAIN_ENV,
    cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
    on_line: Callable[[str], None] | None = None,
    on_error_line: Callable[[str], None] | None = None,
) -> Outcome:
    """`argv` to its end: stdout to `on_line` line by line if given, else into `Outcome.out`;
    `pass_fds` open in the child."""
    child, outcome = await start(argv, env=env, cwd=cwd, pass_fds=pass_fds)
    if child is not None:
        await finish(child, outcome, on_line, on_error_line)
    return outcome


async def start(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: int = asyncio.subprocess.DEVNULL,
    stdout: int = asyncio.subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
) -> tuple[asyncio.subprocess.Process | None, Outcome]:
    """The child, or None and why (a missing program)."""
    try:
        child = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
            start_new_session=True,  # a terminal's Ctrl-C is the agent's to handle, not restic's
        )
    except FileNotFoundError as exc:
        outcome = Outcome(code=127)
        outcome.err.append(f"{argv[0]}: {exc.strerror}")
        return None, outcome
    return child, Outcome()


async def finish(
    child: asyncio.subprocess.Process,
    outcome: Outcome,
    on_line: Callable[[str], None] | None = None,
    on_error_line: Callable[[str], None] | None = None,
) -> None:
    """Read `child`'s output to the end and reap it; stop it first if the caller is cancelled
    (or a line handler fails)."""
    collected: list[str] = []

    def error_line(line: str) -> None:
        outcome.err.append(line)
        if on_error_line is not None:
            on_error_line(line)

    try:
        await together(
            read_lines(child.stderr, error_line),
            read_lines(child.stdout, on_line or collected.append),
            child.wait(),
        )
    except BaseException:
        await _shielded(stop(child))
        raise
    outcome.code = -1 if child.returncode is None else child.returncode
    outcome.out = "\n".join(collected)


async def stop(child: asyncio.subprocess.Process) -> None:
    """SIGINT to the child's process group (it leads one: what it forked goes too, such as
    nsenter's child in a sandbox), SIGKILL after `GRACE_SECONDS`; returns once it is reaped."""
    if child.returncode is None:
        _signal_group(child.pid, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GRACE_SECONDS):
                await child.wait()
    if child.returncode is None:
        _signal_group(child.pid, signal.SIGKILL)
        await child.wait()


async def piped(repository: Repo, args: list[str], consumer: list[str]) -> tuple[Outcome, Outcome]:
    """`restic ARGS | CONSUMER` (restic's stdout straight into the consumer's stdin, no copy
    here); both run to their end, or are both stopped. How each ended."""
    reading, writing = os.pipe()
    try:
        sink, said = await start([*DEATH_SIGNAL, *consumer], env=PLAIN_ENV, stdin=reading)
        if sink is None:
            return Outcome(), said
        try:
            source, dumped = await start(
                command(repository, args), env=environment(repository), stdout=writing
            )
        except BaseException:
            await _shielded(stop(sink))
            raise
    finally:
        os.close(reading)
        os.close(writing)
    await together(finish(sink, said), *([finish(source, dumped)] if source else []))
    return dumped, said


async def together(*work: Coroutine[Any, Any, Any]) -> None:
    """Run `work` side by side; at the first failure (or a cancellation) cancel the rest, and
    return or raise only once all are done."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await _shielded(asyncio.wait(tasks))
    for task in tasks:  # the failure first, not the cancellations it caused
        if not task.cancelled() and task.exception() is not None:
            task.result()
    for task in tasks:
        task.result()


async def read_lines(stream: asyncio.StreamReader | None, handle: Callable[[str], None]) -> None:
    """Each line of `stream` to `handle`, without a length limit (`snapshots --json` prints
    one line for all)."""
    if stream is None:
        return
    pending = bytearray()
    while chunk := await stream.read(1 << 16):
        start = len(pending)
        pending += chunk
        end = pending.rfind(b"\n", start)
        if end >= 0:
            for line in bytes(pending[:end]).split(b"\n"):
                handle(line.decode(errors="replace"))
            del pending[: end + 1]
    if pending:
        handle(pending.decode(errors="replace"))


def said(outcome: Outcome, *, limit: int = 500) -> str:
    """What a process said last, for a sentence: its last non-empty stderr lines, at most
    `limit` characters (the end kept: restic's `Fatal:` line comes last)."""
    lines = [line.strip() for line in outcome.err if line.strip()][-3:]
    if outcome.code < 0:
        with contextlib.suppress(ValueError):  # (a real-time signal has no name)
            lines.insert(0, f"killed by {signal.Signals(-outcome.code).name}")
    text = " / ".join(lines) or f"exit status {outcome.code}"
    return text if len(text) <= limit else "…" + text[-limit:]


NO_REPOSITORY = "Is there a repository at the following location?"


def said_in(outcome: Outcome, words: str) -> bool:
    return any(words in line for line in outcome.err)


def sentence(doing: str, outcome: Outcome, *, snapshot: str | None = None) -> str:
    """An error's sentence: what was being done, what restic said last, and what to do."""
    if outcome.code == 127 and said_in(outcome, "failed to execute restic"):
        return f"{doing}: restic is not installed on this host; install Debian's restic package"
    if outcome.code == 127:
        return f"{doing}: {said(outcome)}; restic runs under setpriv: install util-linux"
    if said_in(outcome, "wrong password or no key found"):
        return (
            f"{doing}: the repository does not open with this key ({said(outcome)}); the"
            " fleet's record of its key is not this repository's"
        )
    if snapshot and (said_in(outcome, "no matching ID") or said_in(outcome, "multiple IDs")):
        return f"{doing}: no snapshot {snapshot} in this environment's backups"
    if said_in(outcome, NO_REPOSITORY):
        advice = "the repository is not there: check its location, or create it (init)"
    elif said_in(outcome, "already locked"):
        advice = "another restic run holds the repository's lock: try again once it is done"
    elif outcome.code < 0:
        advice = "restic was stopped by a signal: try again"
    else:
        advice = "check the repository with `restic check`, then try again"
    return f"{doing} failed: restic said “{said(outcome)}”; {advice}"


class BackupReport:
    """`restic backup --json`'s lines: status (to `on_status`, at most 4 a second), the
    summary, and the errors of what could not be read (on stderr in 0.14)."""

    def __init__(self, home: Path, on_status: Callable[[dict[str, Any]], None] | None) -> None:
        self.home = home
        self.on_status = on_status
        self.summary: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.unlisted = 0
        self.shown = -PROGRESS_SECONDS

    def line(self, text: str) -> None:
        message = _json(text)
        kind = message.get("message_type")
        if kind == "status" and self.on_status is not None:
            if time.monotonic() - self.shown >= PROGRESS_SECONDS:
                self.shown = time.monotonic()
                self.on_status(
                    {
                        "percent": min(1.0, max(0.0, float(message.get("percent_done", 0.0)))),
                        **{k: int(message.get(k, 0)) for k in _PROGRESS_COUNTS},
                    }
                )
        elif kind == "summary":
            self.summary = message
        elif kind == "error":
            self.error(message)

    def error_line(self, text: str) -> None:
        message = _json(text)
        if message.get("message_type") == "error":
            self.error(message)

    def error(self, message: dict[str, Any]) -> None:
        if len(self.errors) >= WARNINGS_MAX:
            self.unlisted += 1
            return
        item = str(message.get("item", ""))
        with contextlib.suppress(ValueError):
            item = str(Path(item).relative_to(Path(os.path.realpath(self.home))))
        error = message.get("error")
        if isinstance(error, dict) and isinstance(error.get("Err"), int):
            self.errors.append(f"{item}: {error.get('Op', 'read')}: {os.strerror(error['Err'])}")
        else:
            self.errors.append(f"{item}: {json.dumps(error) if error else 'could not be read'}")

    def warnings(self, outcome: Outcome) -> list[str]:
        if not self.errors:  # not in JSON: restic's own words, then
            return [
                line for line in outcome.err if line.strip() and "could not be read" not in line
            ]
        return self.errors + ([f"and {self.unlisted} more"] if self.unlisted else [])


_PROGRESS_COUNTS = ("files_done", "bytes_done", "total_files", "total_bytes")


class Listing:
    """`restic ls --json SNAPSHOT WHERE...`'s lines: whether the snapshot was found, the node at
    each `where`, and either the children of the one `where` (one level) or the count of the
    regular files and bytes under each (`--recursive`, without keeping the nodes)."""

    def __init__(self, wheres: list[str], *, recursive: bool) -> None:
        self.recursive = recursive
        self.snapshot = False
        self.nodes: dict[str, dict[str, Any]] = {}
        self.children: list[dict[str, Any]] = []
        self.counts = {where: [0, 0] for where in wheres}

    def line(self, text: str) -> None:
        node = _json(text)
        if node.get("struct_type") == "snapshot":
            self.snapshot = True
        if node.get("struct_type") != "node":
            return
        path = str(node.get("path"))
        if path in self.counts:
            self.nodes[path] = node
        if not self.recursive:
            if posixpath.dirname(path) in self.counts:
                self.children.append(node)
        elif node.get("type") == "file":
            for where, count in self.counts.items():
                if path == where or path.startswith(where + "/"):
                    count[0] += 1
                    count[1] += int(node.get("size", 0))


def local_names(repository: Repo, kind: str) -> list[str] | None:
    """The names of a local repository's `kind` files (`snapshots`, `locks`), read without
    restic: opening a repository costs a key derivation, half a second of CPU. None when the
    repository is not a local directory (then restic is asked)."""
    local = local_path(repository.location)
    if local is None or not (local / "config").exists():
        return None
    with contextlib.suppress(FileNotFoundError):
        return os.listdir(local / kind)
    return []


def summary_counts(summary: dict[str, Any]) -> dict[str, int]:
    """BackupSummary's counts, from the summary line's."""
    names = {"total_files": "total_files_processed", "total_bytes": "total_bytes_processed"}
    fields = ("files_new", "files_changed", "files_unmodified", "total_files", "total_bytes")
    return {f: int(summary.get(names.get(f, f), 0)) for f in (*fields, "data_added")}


def entry_fields(node: dict[str, Any]) -> dict[str, Any]:
    """An Entry's fields (but its link's target), from `ls --json`'s node."""
    return {
        "path": str(node["path"]).removeprefix("/home/"),
        "type": str(node["type"]),
        "size": int(node.get("size", 0)),
        "mode": unix_mode(int(node["mode"])),
        "mtime": utc(str(node["mtime"])),
    }


def snapshot_fields(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A Snapshot's fields, from `snapshots --json`'s."""
    return {
        "id": str(snapshot["id"]),
        "time": utc(str(snapshot["time"])),
        "tags": [str(tag) for tag in snapshot.get("tags") or []],
        "host": str(snapshot.get("hostname", "")),
    }


def link_targets(found: str) -> dict[str, str]:
    """Each link's target by its path, from `find --json`'s matches."""
    return {
        str(match["path"]): str(match.get("linktarget", ""))
        for snapshot in json.loads(found or "[]")
        for match in snapshot.get("matches") or []
    }


def unix_mode(go_mode: int) -> int:
    """Permission bits as chmod takes them, from Go's os.FileMode (which restic stores)."""
    mode = go_mode & 0o777
    for go_bit, bit in ((1 << 23, stat.S_ISUID), (1 << 22, stat.S_ISGID), (1 << 20, stat.S_ISVTX)):
        if go_mode & go_bit:
            mode |= bit
    return mode


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def escape_pattern(path: str) -> str:
    """`path` as a restic pattern that matches it only (its wildcards escaped)."""
    return re.sub(r"([\\\[\]*?])", r"\\\1", path)


def exclude_line(home: Path, pattern: str) -> str:
    """A pattern relative to the home as an exclude file's line: `/x` is anchored at the home,
    `x` (or `x/y`) matches at any depth under it, `!` re-includes, as restic's own; all of them
    anchored under the home's absolute path, so that none matches the directories above it.
    ValueError for what an exclude file cannot carry."""
    body = pattern.removeprefix("!")
    if not body or body != body.strip() or any(c in pattern for c in "\n\r\0"):
        raise ValueError(f"exclude pattern {pattern!r}: one line, not blank at its ends")
    if ".." in body.split("/"):
        raise ValueError(f"exclude pattern {pattern!r}: `..` would leave the home")
    base = escape_pattern(os.path.join(os.path.realpath(home.parent), home.name))
    line = f"{base}{body}" if body.startswith("/") else f"{base}/**/{body}"
    return ("!" if pattern.startswith("!") else "") + line.replace("$", "$$")  # restic expands $


def _json(text: str) -> dict[str, Any]:
    """A JSON object line, or {} for anything else (restic mixes in plain words)."""
    if not text.startswith("{"):
        return {}
    with contextlib.suppress(ValueError):
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    return {}


def _signal_group(pid: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


async def _shielded(work: Coroutine[Any, Any, Any]) -> None:
    """Await `work` to its end even if the awaiting task is cancelled meanwhile (and raise the
    cancellation after): stopping a child is short, and must not be left half done."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()
