"""Backups, restores and cold moves of devservers, for the extension: `leeward/backups/*` and
`leeward/environments/move`. The fleet does the work; the daemon asks it, and for what runs
long (a backup, a move) looks again until it has ended, reporting LSP `$/progress` on the
client's token on the way.

A poll rides through a fleet that does not answer for a while (a restart, a network blip) and
gives up only after `FLEET_PATIENCE`, or at the operation's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from leeward.common.backoff import SPREAD, Backoff
from leeward.daemon.errors import DaemonError
from leeward_protocol.backup import (
    Backup,
    BackupDetail,
    BackupList,
    BackupState,
    Move,
    MoveRequest,
    MoveStage,
    MoveState,
    Restore,
    RestoreRequest,
)
from leeward_protocol.daemon import (
    BackupNowParams,
    BackupShowParams,
    EnvironmentRef,
    FleetLinkState,
    MoveParams,
    RestoreParams,
)

if TYPE_CHECKING:
    from leeward.client.api import FleetClient
    from leeward.daemon.service import Daemon

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKUP_TIMEOUT = 6 * 3600.0
"""Longest `leeward/backups/now` waits for its backup to end (a first backup of a big home)."""

MOVE_TIMEOUT = 6 * 3600.0
"""Longest `leeward/environments/move` waits: a final backup, a restore, a start."""

FLEET_PATIENCE = 600.0
"""How long a poll goes on while the fleet does not answer, before it says so."""

Token = str | int | None


def poll_backoff() -> Backoff:
    """Between looks at a running backup or move: half a second, then longer up to 5 s (a short
    run is seen to end soon after it does; a long one costs the fleet a request every 5 s)."""
    return Backoff(base=0.5, cap=5.0, jitter=SPREAD)


class Reporter:
    """LSP `$/progress` on the token the client gave with its request; without one, nothing."""

    def __init__(self, ls: LanguageServer, token: Token) -> None:
        self.ls = ls
        self.token = token
        self.percentage = -1
        self.message = ""

    def begin(self, title: str, message: str) -> None:
        if self.token is not None:
            self.ls.work_done_progress.begin(
                self.token,
                types.WorkDoneProgressBegin(
                    title=title, message=message, percentage=0, cancellable=False
                ),
            )
            self.percentage, self.message = 0, message

    def report(self, message: str, percentage: int) -> None:
        """Told when it moved on (the percentage never goes back) or says something new."""
        percentage = max(min(percentage, 100), self.percentage)
        if self.token is not None and (percentage, message) != (self.percentage, self.message):
            self.percentage, self.message = percentage, message
            self.ls.work_done_progress.report(
                self.token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )

    def end(self, message: str) -> None:
        if self.token is not None:
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))

    @contextlib.contextmanager
    def ended_on_failure(self) -> Iterator[None]:
        """A failure, or the request cancelled, ends the progress too (saying why)."""
        try:
            yield
        except DaemonError as exc:
            self.end(exc.message)
            raise
        except asyncio.CancelledError:
            self.end("No longer followed here; it goes on in the fleet.")
            raise


# ---------------------------------------------------------------------------------- handlers


async def list_backups(ls: LanguageServer, daemon: Daemon, p: EnvironmentRef) -> BackupList:
    return await daemon._call(lambda c: c.backups(p.environment))


async def show_backup(ls: LanguageServer, daemon: Daemon, p: BackupShowParams) -> BackupDetail:
    return await daemon._call(lambda c: c.backup(p.environment, p.backup, p.path))


async def back_up_now(ls: LanguageServer, daemon: Daemon, p: BackupNowParams) -> Backup:
    """Start a backup (or join the one running), then wait for it to end: the final Backup,
    succeeded or failed (its `message` says why)."""
    progress = Reporter(ls, p.work_done_token)
    progress.begin(f"Backing up {p.environment}", "starting")
    with progress.ended_on_failure():
        started = await daemon._call(lambda c: c.backup_now(p.environment))
        log.info("backup %d of %s: started", started.id, started.environment)

        def seen(current: Backup) -> None:
            percentage = int(current.progress * 100)
            progress.report(f"backing up {current.environment}: {percentage}%", percentage)

        backup = await _until(
            daemon,
            lambda c: _backup_in(c, started),
            first=started,
            running=lambda b: b.state is BackupState.RUNNING,
            seen=seen,
            seconds=BACKUP_TIMEOUT,
            late=f"Backup {started.id} of {started.environment} is still running after "
            f"{BACKUP_TIMEOUT / 3600:.0f} h: see `leeward backup list {started.environment}`.",
        )
    progress.end(backup_summary(backup))
    log.info("%s", backup_summary(backup))
    return backup


async def restore(ls: LanguageServer, daemon: Daemon, p: RestoreParams) -> Restore:
    # What the client gave, less the environment (a null is not the same as nothing).
    request = RestoreRequest(**p.model_dump(include={"backup", "to", "paths"}, exclude_none=True))
    # Once: a lost answer may mean a devserver made already, or files written.
    return await daemon._call(lambda c: c.restore(p.environment, request), attempts=1)


async def move(ls: LanguageServer, daemon: Daemon, p: MoveParams) -> Move:
    """Start a cold move, then wait for it to end: the final Move, done or failed."""
    progress = Reporter(ls, p.work_done_token)
    where = " and ".join(x for x in (p.flavor, p.region) if x)
    progress.begin(f"Moving {p.environment} to {where}", "starting")
    request = MoveRequest(**p.model_dump(include={"flavor", "region"}, exclude_none=True))
    with progress.ended_on_failure():
        started = await daemon._call(lambda c: c.move(p.environment, request), attempts=1)
        name = started.environment
        log.info("move %s of %s: started", started.id, name)

        def seen(current: Move) -> None:
            progress.report(move_message(current, name), move_percentage(current.stage))

        seen(started)
        moving = await _until(
            daemon,
            lambda c: c.move_status(started.id),
            first=started,
            running=lambda m: m.state is MoveState.RUNNING,
            seen=seen,
            seconds=MOVE_TIMEOUT,
            late=f"The move of {name} is still going after {MOVE_TIMEOUT / 3600:.0f} h: see "
            f"`leeward show {name}`.",
        )
    progress.end(move_message(moving, name))
    log.info("move %s: %s", moving.id, move_message(moving, name))
    return moving


# ---------------------------------------------------------------------------------- waiting


async def _backup_in(client: FleetClient, backup: Backup) -> Backup:
    listing = await client.backups(backup.environment_id)
    for current in listing.backups:
        if current.id == backup.id:
            return current
    raise DaemonError(
        f"Backup {backup.id} of {backup.environment} is no longer listed: see "
        f"`leeward backup list {backup.environment}`."
    )


async def _until(
    daemon: Daemon,
    ask: Callable[[FleetClient], Awaitable[T]],
    *,
    first: T,
    running: Callable[[T], bool],
    seen: Callable[[T], None],
    seconds: float,
    late: str,
) -> T:
    """Ask the fleet again and again (backing off to a steady step) until `running` is false;
    `seen` gets every answer. A fleet that does not answer is waited for `FLEET_PATIENCE`."""
    clock = daemon.clock
    deadline = clock.monotonic() + seconds
    answered = clock.monotonic()
    backoff = poll_backoff()
    current = first
    while running(current):
        if clock.monotonic() > deadline:
            raise DaemonError(late)
        await clock.sleep(backoff.next())
        try:
            current = await daemon._call(ask)
        except DaemonError as exc:
            if not _passing(daemon, exc) or clock.monotonic() - answered > FLEET_PATIENCE:
                raise
            log.info("still waiting for the fleet: %s", exc.message)
            continue
        answered = clock.monotonic()
        seen(current)
    return current


def _passing(daemon: Daemon, exc: DaemonError) -> bool:
    """Whether the failure is the fleet out of reach for now, not a refusal."""
    from leeward.daemon.retry import RETRIED_STATUSES  # with the client: loaded after start

    status = exc.data.get("status")
    if status is None:
        return daemon.link.state is FleetLinkState.UNREACHABLE
    return status in RETRIED_STATUSES


# ---------------------------------------------------------------------------------- words


def backup_summary(backup: Backup) -> str:
    what = f"Backup {backup.id} of {backup.environment}"
    if backup.state is BackupState.FAILED:
        return f"{what} failed: {backup.message or 'no reason given'}"
    if backup.state is BackupState.RUNNING:
        return f"{what} is running"
    return f"{what} succeeded: {backup.total_files} files in {backup.seconds:.1f} s"


STAGES = list(MoveStage)


def move_percentage(stage: MoveStage) -> int:
    return int(100 * STAGES.index(stage) / (len(STAGES) - 1))


def move_message(moving: Move, name: str) -> str:
    """`STAGE: what`, as the create's progress messages start with their stage. `name` is the
    moved devserver's (the move's `environment` is the new one's, once made)."""
    stage = moving.stage.value
    if moving.state is MoveState.FAILED:
        why = moving.message.removeprefix(f"{stage}: ") or "no reason given"
        return f"{stage}: the move failed: {why}"
    if moving.state is MoveState.DONE:
        return f"done: {name} is now a {moving.flavor} devserver in {moving.region}"
    return f"{stage}: {moving.message or f'to {moving.flavor} in {moving.region}'}"
