"""What the daemon does for the extension, without JSON-RPC: `server.py` only wires it to pygls.

Every method returns a `leeward_protocol` model or raises `DaemonError`, whose message is one
sentence saying what failed and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from leeward.client.access import AccessError, refresh_ssh, sign_in
from leeward.client.api import FleetClient
from leeward.client.paths import Paths
from leeward.client.sshconfig import add_include, has_include
from leeward.client.wake import WAKE_SECONDS
from leeward.common import sshcert
from leeward.common.clock import Clock
from leeward.common.errors import FleetError
from leeward.daemon.errors import DaemonError
from leeward.daemon.health import HealthMonitor, probe_tcp
from leeward.daemon.inbox import InboxWatcher
from leeward.daemon.link import FleetLink
from leeward.daemon.profile import ProfilePublisher
from leeward.daemon.sessions import SessionWatcher
from leeward.daemon.userconfig import ConfigWatcher, Problem
from leeward_protocol.base import Resource
from leeward_protocol.daemon import (
    ConnectResult,
    CreateParams,
    CreateStage,
    DaemonCatalog,
    DaemonSettings,
    DaemonStatus,
    EnvironmentsResult,
    FleetLinkState,
    HealthList,
    HealthQuery,
    HealthRecord,
    LifespanChoice,
    RegionChoice,
    SignInParams,
)
from leeward_protocol.fleet import (
    CONNECTABLE_STATES,
    Catalog,
    Environment,
    EnvironmentKind,
    EnvironmentState,
    Lifespan,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

Notify = Callable[[str, Resource], None]
Progress = Callable[[CreateStage, str], Awaitable[None]]

READY_TIMEOUT = 300.0
"""Longest a create waits for its environment to be running."""

SSH_PROBE_TIMEOUT = 20.0


def _from_fleet(exc: FleetError) -> DaemonError:
    data: dict[str, object] = {"status": exc.status, "code": exc.code, "field": exc.field}
    if exc.regions_with_room:
        data["regionsWithRoom"] = exc.regions_with_room
    return DaemonError(exc.message, data={k: v for k, v in data.items() if v is not None})


class Daemon:
    def __init__(
        self,
        settings: DaemonSettings,
        *,
        paths: Paths,
        clock: Clock,
        notify: Notify,
        on_config_problems: Callable[[Path, list[Problem]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.clock = clock
        self.notify = notify
        self.log_file: str | None = None
        self.monitor = HealthMonitor(
            clock=clock,
            interval=settings.probe_interval_seconds,
            notify=lambda record: notify("leeward/health", record),
        )
        self.link = FleetLink(
            fleet_url=settings.fleet_url,
            credentials_file=self.credentials_file,
            timeout=settings.fleet_timeout_seconds,
            clock=clock,
            on_environments=self._environments_changed,
            on_status=self._status_changed,
        )
        self.inbox = InboxWatcher(self.link, clock, notify)
        self._ssh_lock = asyncio.Lock()
        self.sessions = SessionWatcher(paths.state_dir / "sessions", self.monitor.set_sessions)
        on_problems = on_config_problems or (lambda path, problems: None)
        config_path = paths.config_dir / "config.toml"
        self.profile = ProfilePublisher(self.link, config_path, paths.state_dir, on_problems)
        self.user_config = ConfigWatcher(config_path, on_problems, self.profile.changed)
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def credentials_file(self) -> Path:
        if self.settings.credentials_file:
            return Path(self.settings.credentials_file).expanduser()
        return self.paths.credentials

    async def start(self) -> None:
        self.monitor.start()
        self.sessions.start()
        self.user_config.start()
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_sessions(), name="proxy sessions"
        )
        await self.link.start()
        await self.inbox.start()

    async def _sweep_sessions(self) -> None:
        """A proxy killed outright leaves its file: look again now and then, not only on
        changes, so that its session goes away."""
        while True:
            await self.clock.sleep(self.settings.probe_interval_seconds)
            self.sessions.refresh()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self.sessions.stop()
        self.user_config.stop()
        await self.profile.close()
        await self.inbox.close()
        await self.link.close()
        await self.monitor.close()

    def _environments_changed(self, result: EnvironmentsResult) -> None:
        self.monitor.update(result.environments)
        self.notify("leeward/environments", result)

    def _status_changed(self, status: DaemonStatus) -> None:
        self.monitor.set_fleet(status.fleet is FleetLinkState.CONNECTED, status.reason)
        if status.fleet is FleetLinkState.CONNECTED:
            self.profile.kick()  # a config.toml that waited for the fleet goes now
        self.notify("leeward/status", self.status())

    # -- account ---------------------------------------------------------------------------------

    def status(self) -> DaemonStatus:
        return self.link.status().model_copy(update={"log_file": self.log_file})

    async def sign_in(self, params: SignInParams) -> DaemonStatus:
        try:
            who = await sign_in(self.paths, params.fleet_url, params.token)
        except AccessError as exc:
            raise DaemonError(str(exc)) from None
        except FleetError as exc:
            raise _from_fleet(exc) from None
        if self.settings.credentials_file and self.credentials_file != self.paths.credentials:
            raise DaemonError(
                f"Signed in as {who.user}, but the settings point at {self.credentials_file}: "
                "clear `leeward.credentialsFile` to use the new sign-in."
            )
        self.link.fleet_url = None
        await self.link.start()
        await self.inbox.start()
        self.link.user = who.user
        return self.status()

    # -- catalog ---------------------------------------------------------------------------------

    async def catalog(self) -> DaemonCatalog:
        fleet = await self._call(lambda c: c.catalog())
        rtts = await asyncio.gather(*(self._region_rtt(r.probe) for r in fleet.regions))
        regions = [
            RegionChoice(
                name=r.name,
                display_name=r.display_name,
                accepting=r.accepting,
                hosts=r.hosts,
                free=r.free,
                largest_free=r.largest_free,
                rtt_ms=rtt,
            )
            for r, rtt in zip(fleet.regions, rtts, strict=True)
        ]
        regions.sort(key=lambda r: (not r.accepting, r.rtt_ms is None, r.rtt_ms or 0.0, r.name))
        default = self.settings.default_region or self.user_config.current.default_region
        if default not in {r.name for r in regions}:
            default = next((r.name for r in regions if r.accepting), None)
        return DaemonCatalog(
            zone=fleet.zone,
            regions=regions,
            flavors=fleet.flavors,
            profiles=fleet.profiles,
            lifespans=fleet.lifespans,
            lifespan_choices=lifespan_choices(fleet),
            default_region=default,
        )

    async def _region_rtt(self, probe: str | None) -> float | None:
        if not probe:
            return None
        host, _, port = probe.rpartition(":")
        try:
            return round(await probe_tcp(host.strip("[]"), int(port), 1.0), 2)
        except (OSError, TimeoutError, ValueError):
            return None

    # -- environments ----------------------------------------------------------------------------

    async def list_environments(self) -> EnvironmentsResult:
        if self.link.client is None:
            raise DaemonError(self.link.reason)
        if self.link.stale or self.link.fetched_at is None:
            return await self.link.refresh()
        return self.link.snapshot()

    async def create(self, params: CreateParams, progress: Progress) -> Environment:
        request = params.request
        where = f" in {request.region}" if request.region else ""
        await progress(CreateStage.PLACING, f"placing: finding room for a {request.kind}{where}")
        key = str(uuid.uuid4())
        env = await self._call(lambda c: c.create(request, idempotency_key=key))
        self.link.remember(env)
        if env.state == EnvironmentState.PROVISIONING:
            await progress(
                CreateStage.STARTING,
                f"starting: {env.name} on {env.host or 'a host'} in {env.region}",
            )
            env = await self._until_settled(env)
        if env.state != EnvironmentState.RUNNING:
            raise DaemonError(
                f"{env.name} did not start ({env.state.value}: {env.status_message}); "
                "create another one, or see `leeward show " + env.name + "`."
            )
        await progress(
            CreateStage.CERTIFYING,
            f"certifying: your certificate, the ssh config and {env.name}'s host certificate",
        )
        _, rtt = await self._prepare_ssh(env)
        await progress(CreateStage.READY, f"ready: {env.name} answers over SSH ({rtt:.0f} ms)")
        return env

    async def _until_settled(self, env: Environment) -> Environment:
        """Wait until the environment leaves `provisioning`: on the event stream, and by asking
        the fleet every few seconds in case the stream is down."""
        deadline = self.clock.monotonic() + READY_TIMEOUT
        last_asked = self.clock.monotonic()
        while True:
            current = self.link.environments.get(env.id, env)
            if current.state != EnvironmentState.PROVISIONING:
                return current
            if self.clock.monotonic() > deadline:
                raise DaemonError(
                    f"{env.name} is still starting after {READY_TIMEOUT:.0f} s: "
                    f"see `leeward show {env.name}`."
                )
            await self.link.wait_changed(1.0)
            if self.clock.monotonic() - last_asked > 3.0:
                last_asked = self.clock.monotonic()
                with contextlib.suppress(FleetError):
                    env = await self.link.find(env.id)

    async def delete(self, ref: str) -> Environment:
        env = await self._call(lambda c: c.delete(ref))
        self.link.remember(env)
        return env

    async def extend(self, ref: str, hours: int) -> Environment:
        # Not retried: if the answer was lost the hours may have been added already.
        env = await self._call(lambda c: c.extend(ref, hours), attempts=1)
        self.link.remember(env)
        return env

    async def connect(self, ref: str) -> ConnectResult:
        env = await self._call(lambda c: c.environment(ref))
        self.link.remember(env)
        # A stopped one (idle stop) too: the login below, through `leeward proxy`, starts it.
        if env.state not in CONNECTABLE_STATES:
            hint = (
                "wait until it is running"
                if env.state == EnvironmentState.PROVISIONING
                else "create another one"
            )
            raise DaemonError(f"{env.name} is {env.state.value}, not running: {hint}.")
        home, rtt = await self._prepare_ssh(env)
        valid_before = sshcert.valid_before(self.paths.certificate.read_text().strip())
        return ConnectResult(
            environment=env,
            host_alias=env.name,
            remote_authority=f"ssh-remote+{env.name}",
            remote_uri=f"vscode-remote://ssh-remote+{env.name}{home}",
            ssh_config=str(self.paths.ssh_config),
            remote_home=home,
            certificate_valid_before=datetime.fromtimestamp(valid_before or 0, UTC),
            rtt_ms=round(rtt, 1),
        )

    async def _prepare_ssh(self, env: Environment) -> tuple[str, float]:
        """Renew the certificate if it has under an hour left, rewrite the ssh config and the
        known_hosts CA line, include them from ~/.ssh/config (plain `ssh NAME` and Remote-SSH
        read only that), then log in with the real OpenSSH client, host certificate checked.
        Returns the remote home and how long the login took (ms)."""
        async with self._ssh_lock:
            await self._call(lambda c: refresh_ssh(c, self.paths))
            user_config = Path.home() / ".ssh" / "config"
            if not has_include(user_config, self.paths):
                add_include(user_config, self.paths)
                log.info("added an Include of %s to %s", self.paths.ssh_config, user_config)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "ssh",
            "-F",
            str(self.paths.ssh_config),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            env.name,
            "pwd",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # A stopped environment is started by this login: it may take the start's time too.
        waking = WAKE_SECONDS if env.state == EnvironmentState.STOPPED else 0.0
        try:
            async with asyncio.timeout(SSH_PROBE_TIMEOUT + waking):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DaemonError(
                f"{env.name} did not answer over SSH in {SSH_PROBE_TIMEOUT:.0f} s: check its "
                "health, or try again."
            ) from None
        elapsed = (time.perf_counter() - started) * 1000
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()
            raise DaemonError(
                f"ssh to {env.name} failed: {detail[-1] if detail else 'no message'}. "
                f"Try `leeward ssh {env.name}` in a terminal to see more."
            )
        return out.decode(errors="replace").strip() or "/", elapsed

    # -- health ----------------------------------------------------------------------------------

    async def health_list(self, query: HealthQuery) -> list[HealthRecord]:
        records = list(self.monitor.records.values())
        if query.environment:
            records = [r for r in records if query.environment in (r.environment_id, r.name)]
            if not records:
                raise DaemonError(
                    f"No environment {query.environment!r} is watched: it is not one of your "
                    "live environments."
                )
        return sorted(records, key=lambda r: r.name)

    async def health(self, query: HealthQuery) -> HealthList:
        return HealthList(records=await self.health_list(query))

    # -- plumbing --------------------------------------------------------------------------------

    async def answer(self, work: Awaitable[T]) -> T:
        """`work`, with a refusal of the fleet as the daemon's one-sentence error."""
        try:
            return await work
        except FleetError as exc:
            raise _from_fleet(exc) from None

    async def _call(self, work: Callable[[FleetClient], Awaitable[T]], attempts: int = 3) -> T:
        try:
            return await self.link.call(work, attempts=attempts)
        except FleetError as exc:
            raise _from_fleet(exc) from None


def lifespan_choices(catalog: Catalog) -> list[LifespanChoice]:
    """What the create wizard offers: a few expiries per kind, within the fleet's policy (the
    fleet's default first for containers, shortest first for devservers, then permanent)."""
    lt = catalog.lifespans

    def temporary(kind: EnvironmentKind, hours: list[int]) -> list[LifespanChoice]:
        return [
            LifespanChoice(label=_hours_label(h), kind=kind, lifespan=Lifespan.TEMPORARY, hours=h)
            for h in hours
        ]

    devserver = sorted({8, 24, lt.devserver_default_hours, 168})
    container = sorted({lt.container_hours, 8, 12}, reverse=True)
    return [
        *temporary(
            EnvironmentKind.DEVSERVER,
            [h for h in devserver if 0 < h <= lt.devserver_max_hours],
        ),
        LifespanChoice(
            label="Permanent", kind=EnvironmentKind.DEVSERVER, lifespan=Lifespan.PERMANENT
        ),
        *temporary(
            EnvironmentKind.CONTAINER,
            [h for h in container if 0 < h <= lt.container_max_hours],
        ),
    ]


def _hours_label(hours: int) -> str:
    if hours % 24 == 0 and hours >= 48:
        return f"{hours // 24} days"
    return f"{hours} hours" if hours != 1 else "1 hour"
