"""Setup at provision: the agent installs the features, one-offs and dotfiles the fleet lists
for its environment, after it reported ready, one step after the other.

A step writes its files into the home, then runs its script with `bash -e` (in the home, in the
environment's place: its sandbox, as its owner; stdin from /dev/null, in its own process group,
stopped at its deadline); the output goes to `~/.local/state/leeward/setup/<slug>.log`. A step
that worked leaves `<slug>.done` holding its digest: while the digest is the same, the step is
reported installed and not run again (an agent restart or a reload installs nothing twice). A
failure is reported with the end of its log and never stops the other steps, nor the agent.

Steps are the fleet's `SetupStep`s, statuses its `SetupItem`s, both through `AgentFleet`: the
steps with the environment's profile, the statuses in its reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from leeward.agent.place import login_environment
from leeward.common.backoff import NO_JITTER, Backoff, worth_telling
from leeward.common.errors import FleetError
from leeward.common.files import write_atomic
from leeward.common.threads import in_thread
from leeward_protocol.fleet import SetupItem, SetupState

if TYPE_CHECKING:
    from leeward.agent.fleet import AgentFleet
    from leeward.agent.place import Place
    from leeward_protocol.profile import SetupStep

log = logging.getLogger("leeward.agent.setup")
T = TypeVar("T")

STATE_DIR = Path(".local/state/leeward/setup")
"""Logs and markers, relative to the home."""

LOG_TAIL_BYTES = 4096
PROGRESS_SECONDS = 2.0
"""While a step runs, how often the end of its log is reported."""
KILL_GRACE_SECONDS = 2.0
"""After SIGTERM at the deadline, how long a step's processes have before SIGKILL."""

_WHAT = {"feature": "install script", "one-off": "command", "dotfiles": "dotfiles script"}


class StepError(Exception):
    """A step the fleet sent cannot be run; the message says which field."""


def checked(steps: Sequence[SetupStep]) -> list[SetupStep]:
    """`steps`, each with a deadline it can be run to (the wire's model allows any number)."""
    for step in steps:
        if step.timeout_seconds <= 0:
            raise StepError(f"setup step {step.name!r}: timeoutSeconds must be a positive number")
    return list(steps)


def slug(step: SetupStep) -> str:
    """A file name for a step's log and marker: `feature-git-defaults`, `one-off-2`."""
    label = step.name if step.name.startswith(step.kind) else f"{step.kind}-{step.name}"
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", label.lower()).strip("-.")
    return cleaned[:100] or "step"


def what(step: SetupStep) -> str:
    return _WHAT.get(step.kind, "script")


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The end of a log, at most `limit` bytes of UTF-8 (no character cut in half)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            raw = f.read(limit)
    except OSError:
        return ""
    if len(raw) == limit:
        raw = raw.lstrip(bytes(range(0x80, 0xC0)))  # a character's tail, its head cut off
    text = raw.decode("utf-8", errors="replace")
    while len(text.encode()) > limit:  # replacement characters are wider than what they stand for
        text = text[1:]
    return text


def write_home_file(home: Path, relative: str, text: str) -> None:
    """Write `text` at `home/relative` atomically; refuse any path that leaves the home (`..`,
    absolute, or through a symbolic link)."""
    parts = relative.split("/")
    if (
        not relative
        or relative.startswith(("/", "~"))
        or "\\" in relative
        or "\x00" in relative
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise StepError(f"{relative!r} is not a path inside the home")
    root = home.resolve()
    target = root.joinpath(*parts)
    parent = target.parent.resolve()
    if not parent.is_relative_to(root):
        raise StepError(f"{relative} leads outside the home (a symbolic link on the way)")
    parent.mkdir(parents=True, exist_ok=True)
    if not parent.resolve().is_relative_to(root):
        raise StepError(f"{relative} leads outside the home (a symbolic link on the way)")
    final = parent / parts[-1]
    if final.is_dir() and not final.is_symlink():
        raise StepError(f"{relative} is a directory")
    write_atomic(final, text)  # a symbolic link at `final` is replaced, not followed


Report = Callable[[list[SetupItem]], Awaitable[None]]


class SetupRun:
    """One pass over the steps. `report` gets every item each time one of them changes; it
    must not raise (see `Reporter`)."""

    def __init__(
        self,
        home: Path,
        steps: Sequence[SetupStep],
        report: Report,
        env: Mapping[str, str] | None = None,
        *,
        progress_seconds: float = PROGRESS_SECONDS,
        place: Callable[[list[str]], list[str]] | None = None,
        cwd: Path | None = None,
        files: Executor | None = None,
    ) -> None:
        self.home = home
        self._executor = files
        self._place = place or (lambda argv: argv)
        self._cwd = cwd or home
        self.steps = list(steps)
        self.items = [
            SetupItem(kind=s.kind, name=s.name, state=SetupState.PENDING) for s in self.steps
        ]
        self._report = report
        self._env = dict(env) if env is not None else environment(home)
        self._progress_seconds = progress_seconds
        self.state_dir = home / STATE_DIR

    async def run(self) -> list[SetupItem]:
        await self._send()
        for step, item in zip(self.steps, self.items, strict=True):
            try:
                await self._run_step(step, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop the other steps
                log.exception("setup step %s failed unexpectedly", step.name)
                await self._finish_off(
                    item, SetupState.FAILED, f"the agent could not run it: {exc}"
                )
            log.info("setup %s %s: %s (%s)", step.kind, step.name, item.state, item.detail)
            await self._send()
        return self.items

    async def _files(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """File work on the home, in the owner's threads when the environment has a sandbox."""
        return await in_thread(functools.partial(func, *args, **kwargs), executor=self._executor)

    async def _send(self) -> None:
        await self._report([item.model_copy() for item in self.items])

    def _finish(self, item: SetupItem, state: SetupState, detail: str) -> None:
        item.state = state
        item.detail = detail
        item.finished_at = datetime.now(UTC)

    async def _run_step(self, step: SetupStep, item: SetupItem) -> None:
        log_path = self.state_dir / f"{slug(step)}.log"
        marker = self.state_dir / f"{slug(step)}.done"
        item.log_path = str(log_path)
        # Every file of the home is touched off the event loop: in a sandboxed environment the
        # agent's threads act on the home as its owner (leeward.sandbox.owners), never as root.
        if await self._files(_read, marker) == step.digest:
            item.state, item.detail = SetupState.INSTALLED, "already installed; not run again"
            item.log = await self._files(log_tail, log_path)
            return
        item.state, item.started_at = SetupState.INSTALLING, datetime.now(UTC)
        item.detail = f"{what(step)} running"
        await self._send()
        await self._files(self.state_dir.mkdir, parents=True, exist_ok=True)
        await self._files(marker.unlink, missing_ok=True)
        for relative, text in step.files.items():
            try:
                await self._files(write_home_file, self.home, relative, text)
            except (StepError, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                why = f"cannot write {relative}: {reason}"
                await self._files(_write_log, log_path, why + "\n")
                await self._finish_off(item, SetupState.FAILED, why)
                return
        started = time.monotonic()
        outcome = await self._execute(step, item, log_path)
        took = f"{time.monotonic() - started:.1f} s"
        failed, installed, program = SetupState.FAILED, SetupState.INSTALLED, what(step)
        if outcome is None:
            await self._finish_off(
                item,
                failed,
                f"{program} did not finish within {step.timeout_seconds:g} s and was stopped",
            )
        elif isinstance(outcome, str):
            await self._finish_off(item, failed, f"cannot run {program}: {outcome}")
        elif outcome == 0:
            await self._files(write_atomic, marker, step.digest + "\n")
            await self._finish_off(item, installed, f"{program} finished in {took}")
        elif outcome < 0:
            name = _signal_name(-outcome)
            await self._finish_off(item, failed, f"{program} was killed by {name} after {took}")
        else:
            await self._finish_off(
                item, failed, f"{program} exited with status {outcome} after {took}"
            )

    async def _finish_off(self, item: SetupItem, state: SetupState, detail: str) -> None:
        """`_finish`, with the end of the log read off the event loop."""
        self._finish(item, state, detail)
        if item.log_path is not None:
            item.log = await self._files(log_tail, Path(item.log_path))

    async def _execute(self, step: SetupStep, item: SetupItem, log_path: Path) -> int | str | None:
        """The script's exit status (negative: the signal), None at the deadline, or why it
        could not start."""
        try:
            with await self._files(log_path.open, "wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *self._place(["bash", "-e", "-c", step.script]),
                    cwd=self._cwd,
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
        except OSError as exc:
            return exc.strerror or str(exc)
        deadline = time.monotonic() + step.timeout_seconds
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    await _stop_group(proc)
                    return None
                try:
                    async with asyncio.timeout(min(left, self._progress_seconds)):
                        return await proc.wait()
                except TimeoutError:
                    tail = await self._files(log_tail, log_path)
                    if tail != item.log:
                        item.log = tail
                        await self._send()
        except BaseException:
            await asyncio.shield(_stop_group(proc))  # the agent stopping: no orphans
            raise


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the step's process group, SIGKILL after a grace period; whatever the script
    left running in its group goes too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE_SECONDS):
            await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _write_log(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        path.write_text(text)


def environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a step's script sees: the home, the agent's PATH, locale and user, and `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "USER", "LOGNAME", "LANG", "TZ") or key.startswith("LC_")
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    env["SHELL"] = "/bin/bash"
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------- the fleet

Send = Callable[[list[SetupItem]], Awaitable[None]]
MAX_RETRY_SECONDS = 30.0
FLEET_SECONDS = 10.0
"""The deadline of a report or of fetching the steps."""


class Reporter:
    """Sends the latest statuses to the fleet, in order, never blocking the steps: a newer
    report replaces one not sent yet, and a failed one is retried (backoff up to 30 s) until
    the fleet takes it or the reporter is closed."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._latest: list[SetupItem] | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, items: list[SetupItem]) -> None:
        self._latest = items
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="setup-report")

    async def _drain(self) -> None:
        backoff = Backoff(base=1.0, cap=MAX_RETRY_SECONDS, jitter=NO_JITTER)
        while self._latest is not None:
            items, self._latest = self._latest, None
            try:
                await self._send(items)
                backoff.reset()
            except Exception as exc:
                if worth_telling(backoff.attempt + 1):
                    log.warning("setup report failed (%d in a row): %s", backoff.attempt + 1, exc)
                if self._latest is None:
                    self._latest = items
                await asyncio.sleep(backoff.next())
        self._idle.set()

    async def flush(self) -> None:
        """Wait until the latest report reached the fleet."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class AgentLike(Protocol):
    """What `Setup` needs from the agent's config (an `AgentConfig`)."""

    @property
    def environment_id(self) -> str: ...
    @property
    def fqdn(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def home(self) -> Path: ...


class Setup:
    """The agent's side: once it is ready (or a reload gave a warm container its owner), ask
    the fleet for this environment's steps and run them in the background. A warm container
    (no owner) runs nothing; a run in progress is not started twice."""

    def __init__(
        self,
        config: Callable[[], AgentLike],
        fleet: AgentFleet,
        *,
        retry_seconds: float = MAX_RETRY_SECONDS,
        place: Callable[[], Place] | None = None,
        files: Callable[[], Executor | None] = lambda: None,
    ) -> None:
        self._config = config
        self._place = place
        self._files = files
        self._fleet = fleet
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.reporter = Reporter(self._report)
        self.last: list[SetupItem] = []

    def start(self, steps: Sequence[SetupStep] | None = None) -> bool:
        """Start a run (with `steps` if the caller already has them, e.g. from the profile it
        fetched; otherwise they are fetched). False when there is nothing to do now."""
        if self._config().owner is None or (self._task is not None and not self._task.done()):
            return False
        self._task = asyncio.create_task(self._run(steps), name="setup")
        return True

    async def wait(self) -> list[SetupItem]:
        if self._task is not None:
            await asyncio.shield(self._task)
        await self.reporter.flush()
        return self.last

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.reporter.close()

    async def _report(self, items: list[SetupItem]) -> None:
        await self._fleet.report(setup=items, within=FLEET_SECONDS)

    async def _fetch(self) -> list[SetupStep]:
        """The steps from the environment's profile, retried until the fleet answers."""
        backoff = Backoff(base=1.0, cap=self._retry_seconds, jitter=NO_JITTER)
        while True:
            try:
                return checked((await self._fleet.profile(within=FLEET_SECONDS)).setup)
            except (FleetError, StepError) as exc:
                if worth_telling(backoff.attempt + 1):
                    log.warning(
                        "cannot fetch the setup steps (%d in a row): %s", backoff.attempt + 1, exc
                    )
            await asyncio.sleep(backoff.next())

    async def _run(self, given: Sequence[SetupStep] | None) -> None:
        try:
            steps = checked(given) if given is not None else await self._fetch()
        except StepError as exc:
            log.error("setup not run: %s", exc)
            return
        if not steps:
            return
        config = self._config()
        ours = {"LEEWARD_ENVIRONMENT_ID": config.environment_id, "LEEWARD_ENVIRONMENT": config.fqdn}
        if self._place is None:
            run = SetupRun(config.home, steps, self._remember, environment(config.home, ours))
        else:
            place = self._place()
            env = {
                **login_environment(place),
                **{k: v for k, v in os.environ.items() if k in ("LANG", "TZ")},
                **ours,
            }
            run = SetupRun(
                place.home,
                steps,
                self._remember,
                env,
                place=place.argv,
                cwd=place.cwd(),
                files=self._files(),
            )
        await run.run()

    async def _remember(self, items: list[SetupItem]) -> None:
        self.last = items
        await self.reporter(items)
