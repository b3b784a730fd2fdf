"""The user's config.toml follows them: each valid version is stored in the fleet as their
profile's config (new environments take their features, one-offs and tracked paths from it),
and a `dotfiles.path` directory is uploaded into the profile's files.

Only a valid config is sent; an invalid one changes nothing (the previous profile stays in
force). When the fleet is away the latest valid config waits and goes once it answers again.
When the fleet refuses a config (a feature its catalog does not have), the refusal is shown on
that key's line like any other problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from leeward.client.api import FleetClient, FleetUnreachable
from leeward.common.errors import FleetError
from leeward.common.files import write_atomic
from leeward.common.profilefiles import Limits, LocalFile, scan, upload_batches
from leeward.daemon.link import FleetLink, NotSignedIn
from leeward.daemon.userconfig import Problem, field_location, locate
from leeward_protocol.fleet import Refusal
from leeward_protocol.profile import FileUpload, Profile, ProfileUpload
from leeward_protocol.userconfig import UserConfig

log = logging.getLogger(__name__)


class ProfilePublisher:
    def __init__(
        self,
        link: FleetLink,
        config_path: Path,
        state_dir: Path,
        on_problems: Callable[[Path, list[Problem]], None],
    ) -> None:
        self.link = link
        self.config_path = config_path
        self.state_dir = state_dir
        self.on_problems = on_problems
        self.published: str | None = None
        """The config JSON the fleet last accepted from this daemon."""
        self.published_version = 0
        self._wanted: tuple[UserConfig, str] | None = None
        self._task: asyncio.Task[None] | None = None

    def changed(self, config: UserConfig, text: str) -> None:
        """A valid config.toml (`text`) is in force: send it (now, or once the fleet answers)."""
        self._wanted = (config, text)
        self.kick()

    def kick(self) -> None:
        if self._wanted is None or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._publish(), name="profile")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _publish(self) -> None:
        while self._wanted is not None:
            config, text = self._wanted
            wire = config.model_dump_json()
            try:
                if wire != self.published:
                    profile = await self.link.call(_put(config))
                    self.published, self.published_version = wire, profile.version
                    log.info("config.toml stored in the fleet: profile version %d", profile.version)
                if config.dotfiles is not None and config.dotfiles.path is not None:
                    await self._upload_dotfiles(config.dotfiles.path)
            except (FleetUnreachable, NotSignedIn) as exc:
                log.info("config.toml waits for the fleet: %s", exc)
                return  # kick() again once the link is back
            except FleetError as exc:
                self._refused(text, exc)
            if self._wanted == (config, text):
                self._wanted = None

    def _refused(self, text: str, exc: FleetError) -> None:
        field = exc.field or ""
        loc = field_location(field)
        line, column, length = locate(text, loc) if loc else (1, 1, 1)
        message = exc.message.rstrip(".")
        log.warning("the fleet refused config.toml: %s", message)
        self.on_problems(
            self.config_path,
            [
                Problem(
                    line,
                    column,
                    length,
                    f"{message} (the fleet refused this config; the profile keeps the last one "
                    "it accepted).",
                )
            ],
        )

    async def _upload_dotfiles(self, where: str) -> None:
        profile = await self.link.call(lambda c: c.profile())
        limits = Limits(
            profile.limits.max_file_bytes, profile.limits.max_files, profile.limits.max_total_bytes
        )
        scanned = await asyncio.to_thread(_scan_dotfiles, where, limits)
        if scanned is None:
            log.warning("dotfiles.path %s is not a directory: nothing uploaded", where)
            return
        found, refused = scanned
        # Only what changed in the directory since this machine last sent it: a file edited in
        # an environment since then is newer than the directory's copy, and stays.
        held = {f.path: f.sha256 for f in profile.files}
        sent = await asyncio.to_thread(self._sent, where)
        changed = [
            f for f in found if sent.get(f.path) != f.sha256 and held.get(f.path) != f.sha256
        ]
        for item in refused:
            log.warning("dotfiles: %s", item.reason)
        for batch in upload_batches(changed):
            if batch:
                await self._send([local.upload() for local in batch])
        await asyncio.to_thread(self._remember, where, {f.path: f.sha256 for f in found})

    def _record(self) -> Path:
        return self.state_dir / "dotfiles-sent.json"

    def _sent(self, where: str) -> dict[str, str]:
        """What this machine last sent from `where` (path -> sha256)."""
        try:
            record = json.loads(self._record().read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict) or record.get("directory") != where:
            return {}
        files = record.get("files")
        return files if isinstance(files, dict) else {}

    def _remember(self, where: str, files: dict[str, str]) -> None:
        path = self._record()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"directory": where, "files": files}))

    async def _send(self, files: list[FileUpload]) -> None:
        upload = ProfileUpload(files=files, source="dotfiles")
        result = await self.link.call(lambda c: c.upload_profile(upload))
        for item in result.refused:
            log.warning("dotfiles: the fleet refused %s", item.reason)
        log.info(
            "dotfiles: %d file(s) stored, profile version %d", len(result.stored), result.version
        )


def _put(config: UserConfig) -> Callable[[FleetClient], Awaitable[Profile]]:
    return lambda client: client.put_profile_config(config)


def _scan_dotfiles(where: str, limits: Limits) -> tuple[list[LocalFile], list[Refusal]] | None:
    """The dotfiles directory's files, as they go into the home (`.git` left out)."""
    directory = Path(where).expanduser()
    if not directory.is_dir():
        return None
    tops = sorted(p.name for p in directory.iterdir() if p.name != ".git")
    return scan(directory, tops, limits)
