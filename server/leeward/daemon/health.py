"""Health records: for every environment the daemon watches, is it answering, how fast, and if
not, why. A probe opens a TCP connection to the environment's SSH server and times its banner.

connecting: not reached yet (or still starting); healthy: answers in time; degraded: answers
slowly, or answers while the fleet behind it cannot be reached; reconnecting: it answered before
and now does not, and probes go on; unreachable: no answer for `unreachable_after` probes in a
row, or the fleet is deleting it; stopped: the fleet stopped it for being idle (not probed). A
notification goes out when the state, the reason or the fleet's reachability changes, or the
smoothed round trip moves by more than a quarter (and 5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from leeward.common.clock import Clock
from leeward.daemon.sessions import ProxySession
from leeward_protocol.daemon import HealthRecord, HealthState
from leeward_protocol.fleet import REACHABLE_STATES, Environment, EnvironmentState

log = logging.getLogger(__name__)

Probe = Callable[[str, int, float], Awaitable[float]]
"""(address, port, timeout) -> round trip in ms; raises OSError or TimeoutError."""


RESUME_SHOWN = 1.0
"""Seconds a resume shows as "reconnecting" at least: a TCP reset is dark for a tenth of a second
or less, which no one would see, and the status bar would not tell that anything happened."""

SMOOTHING = 0.125
"""Weight of a new probe in the smoothed round trip (TCP's SRTT uses 1/8 too)."""


class ProbeFailed(OSError):
    pass


async def probe_ssh(address: str, port: int, seconds: float) -> float:
    """Time from opening a TCP connection to the SSH server's version line, in ms."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(seconds):
        reader, writer = await asyncio.open_connection(address, port)
        try:
            banner = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if not banner.startswith(b"SSH-"):
        raise ProbeFailed(f"{address}:{port} answered, but not as an SSH server")
    return (loop.time() - started) * 1000


async def probe_tcp(address: str, port: int, seconds: float) -> float:
    """Time to open a TCP connection, in ms (a region's gateway)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(seconds):
        _, writer = await asyncio.open_connection(address, port)
    elapsed = (loop.time() - started) * 1000
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return elapsed


def _names(watch: _Watch) -> set[str]:
    """What a proxy may call the environment: its name, id or full name."""
    env = watch.environment
    return {env.name, env.id, env.fqdn}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


@dataclass
class _Watch:
    environment: Environment
    failures: int = 0
    rtt: float | None = None
    task: asyncio.Task[None] | None = None


class HealthMonitor:
    def __init__(
        self,
        *,
        clock: Clock,
        interval: float,
        notify: Callable[[HealthRecord], None],
        probe: Probe = probe_ssh,
        timeout: float = 3.0,
        slow_ms: float = 250.0,
        unreachable_after: int = 3,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.notify = notify
        self.probe = probe
        self.timeout = timeout
        self.slow_ms = slow_ms
        self.unreachable_after = unreachable_after
        self.records: dict[str, HealthRecord] = {}
        """What the client is told: the probes' view with the proxies' sessions on top."""
        self._base: dict[str, HealthRecord] = {}
        """The probes' and the fleet's view alone."""
        self.fleet_reachable = True
        self.fleet_reason = ""
        self._watches: dict[str, _Watch] = {}
        self._running = False
        self.sessions: list[ProxySession] = []
        self._resumed: dict[str, tuple[float, str]] = {}
        """Environment id: until when (monotonic) its last resume shows, and what to say."""
        self._showing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._running = True
        for env_id, watch in self._watches.items():
            self._spawn(env_id, watch)

    async def close(self) -> None:
        self._running = False
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        tasks += self._showing
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what to watch ---------------------------------------------------------------------------

    def update(self, environments: list[Environment]) -> None:
        """Watch these environments (the user's live ones); forget the others."""
        current = {e.id: e for e in environments}
        for env_id in list(self._watches):
            if env_id not in current:
                watch = self._watches.pop(env_id)
                if watch.task is not None:
                    watch.task.cancel()
                self.records.pop(env_id, None)
                record = self._base.get(env_id)
                if record is not None:
                    self._publish(
                        record,
                        state=HealthState.UNREACHABLE,
                        environment_state=EnvironmentState.DELETED,
                        reason=f"{record.name} was deleted.",
                        force=True,
                    )
        for env_id, environment in current.items():
            found = self._watches.get(env_id)
            if found is None:
                watch = self._watches[env_id] = _Watch(environment)
                if self._running:
                    self._spawn(env_id, watch)
            else:
                watch = found
                watch.environment = environment
            self._judge_state(watch)

    def set_fleet(self, reachable: bool, reason: str) -> None:
        """The fleet answers, or not: a healthy environment behind an unreachable fleet is
        degraded (its list may be stale; nothing can be created or renewed)."""
        if (reachable, reason) == (self.fleet_reachable, self.fleet_reason):
            return
        self.fleet_reachable, self.fleet_reason = reachable, reason
        for record in list(self._base.values()):
            self._publish(record, **self._with_fleet(record.state, record.rtt_ms, record.reason))

    def set_sessions(self, sessions: list[ProxySession]) -> None:
        """The proxies' sessions changed: a resume or a DNS bypass shows in the records."""
        if sessions == self.sessions:
            return
        before = {s.pid: s.resumes for s in self.sessions}
        self.sessions = sessions
        for session in sessions:
            if session.resumes > before.get(session.pid, session.resumes):
                self._show_resume(session)
        for record in list(self._base.values()):
            self._publish(record)

    def _show_resume(self, session: ProxySession) -> None:
        """A session resumed: its environment shows "reconnecting" for `RESUME_SHOWN` from
        now, saying how long it was really dark, then what the probes say again."""
        env_id = next((i for i, w in self._watches.items() if session.env in _names(w)), None)
        if env_id is None:
            return
        dark = f" after {session.blackout_ms:g} ms" if session.blackout_ms is not None else ""
        why = f" ({session.resumed_after})" if session.resumed_after else ""
        reason = f"Resumed its SSH session through the relay{dark}{why}."
        self._resumed[env_id] = (self.clock.monotonic() + RESUME_SHOWN, reason)

        async def later() -> None:
            await self.clock.sleep(RESUME_SHOWN)
            until, _ = self._resumed.get(env_id, (0.0, ""))
            if until <= self.clock.monotonic():
                self._resumed.pop(env_id, None)
                record = self._base.get(env_id)
                if record is not None:
                    self._publish(record)

        task = asyncio.get_running_loop().create_task(later(), name=f"resumed {env_id}")
        self._showing.add(task)
        task.add_done_callback(self._showing.discard)

    def _overlay(self, record: HealthRecord) -> HealthRecord:
        """What the proxies say on top of the probes: they see the real sessions."""
        env = self._watches.get(record.environment_id)
        names = {record.name, record.environment_id}
        if env is not None:
            names |= _names(env)
        mine = [s for s in self.sessions if s.env in names]
        route = next((s.source for s in mine if s.state == "connected" and s.source), None)
        bypass = any(s.dns_down for s in mine if s.state == "connected")
        update: dict[str, Any] = {"sessions": len(mine), "route": route, "dns_bypass": bypass}
        resuming = [s for s in mine if s.state == "resuming"]
        if resuming and record.state is HealthState.UNREACHABLE:
            # The probes have given up; the relay goes on trying until its deadline.
            update["reason"] = (
                f"{record.reason} Its SSH session is still trying to resume through the relay."
            )
        elif resuming:
            why = f" ({resuming[0].reason})" if resuming[0].reason else ""
            update["state"] = HealthState.RECONNECTING
            update["reason"] = f"Resuming its SSH session through the relay{why}."
        elif (shown := self._resumed.get(record.environment_id)) and record.state not in (
            HealthState.UNREACHABLE,
            HealthState.CONNECTING,
            HealthState.STOPPED,
        ):
            if shown[0] > self.clock.monotonic():
                update["state"] = HealthState.RECONNECTING
                update["reason"] = shown[1]
        elif record.state is HealthState.HEALTHY and bypass:
            update["state"] = HealthState.DEGRADED
            update["reason"] = (
                f"DNS bypass: the fleet's DNS does not answer; reached through the {route}."
            )
        return record.model_copy(update=update)

    # -- probing ---------------------------------------------------------------------------------

    def _spawn(self, env_id: str, watch: _Watch) -> None:
        watch.task = asyncio.get_running_loop().create_task(
            self._watch(env_id), name=f"health {env_id}"
        )

    async def _watch(self, env_id: str) -> None:
        while env_id in self._watches:
            await self.check(env_id)
            await self.clock.sleep(self.interval)

    async def check(self, env_id: str) -> HealthRecord | None:
        """Probe one environment now and update its record."""
        watch = self._watches.get(env_id)
        if watch is None:
            return None
        env = watch.environment
        if env.state not in REACHABLE_STATES or not env.address or not env.ssh_port:
            return self._judge_state(watch)
        try:
            rtt = await self.probe(env.address, env.ssh_port, self.timeout)
        except (OSError, TimeoutError) as exc:
            return self._failed(watch, _describe(exc))
        if self._watches.get(env_id) is not watch:
            return None
        watch.failures = 0
        # Smoothed as TCP smooths its round-trip estimate, so one slow probe on a busy machine
        # neither flips the state nor sends a notification.
        smooth = rtt if watch.rtt is None else watch.rtt + SMOOTHING * (rtt - watch.rtt)
        watch.rtt = smooth
        return self._publish(
            self._record(watch),
            rtt_ms=round(smooth, 1),
            checked_at=self.clock.now(),
            **self._with_fleet(HealthState.HEALTHY, smooth, "", env),
        )

    # -- judging ---------------------------------------------------------------------------------

    def _with_fleet(
        self, state: HealthState, rtt: float | None, reason: str, env: Environment | None = None
    ) -> dict[str, Any]:
        if state in (HealthState.HEALTHY, HealthState.DEGRADED) and rtt is not None:
            if env is not None and env.state == EnvironmentState.MIGRATING:
                state = HealthState.DEGRADED
                reason = (
                    f"Migrating from {env.migrating_from} to {env.host}: it may go dark a moment."
                )
            elif not self.fleet_reachable:
                state = HealthState.DEGRADED
                reason = f"It answers, but the fleet cannot be reached: {self.fleet_reason}"
            elif rtt > self.slow_ms:
                state, reason = HealthState.DEGRADED, f"Slow: {rtt:.0f} ms round trip."
            else:
                state, reason = HealthState.HEALTHY, ""
        return {"state": state, "reason": reason, "fleet_reachable": self.fleet_reachable}

    def _failed(self, watch: _Watch, why: str) -> HealthRecord:
        watch.failures += 1
        watch.rtt = None
        env = watch.environment
        record = self._record(watch)
        where = f"{env.address}:{env.ssh_port}"
        if env.state == EnvironmentState.MIGRATING:
            # Dark on purpose, for its blackout: it comes back on the new host.
            state = HealthState.RECONNECTING
            reason = f"Migrating from {env.migrating_from} to {env.host}; dark for a moment."
        elif watch.failures >= self.unreachable_after:
            state = HealthState.UNREACHABLE
            reason = f"No answer from {env.name} at {where} ({why}) in {watch.failures} tries."
        elif record.state in (HealthState.CONNECTING,):
            state, reason = HealthState.CONNECTING, f"Not answering yet at {where} ({why})."
        else:
            state = HealthState.RECONNECTING
            reason = f"Lost {env.name} at {where} ({why}); trying again."
        return self._publish(
            record,
            state=state,
            reason=reason,
            rtt_ms=None,
            checked_at=self.clock.now(),
            fleet_reachable=self.fleet_reachable,
        )

    def _judge_state(self, watch: _Watch) -> HealthRecord:
        """What the fleet's view alone says (before or instead of a probe)."""
        env = watch.environment
        record = self._record(watch)
        if env.state == EnvironmentState.PROVISIONING:
            return self._publish(
                record,
                state=HealthState.CONNECTING,
                reason=f"Starting on {env.host or 'a host'}: {env.status_message}".rstrip(": "),
            )
        if env.state == EnvironmentState.STOPPED:
            watch.failures, watch.rtt = 0, None
            return self._publish(
                record,
                state=HealthState.STOPPED,
                rtt_ms=None,
                reason=(
                    f"{env.name} is stopped (idle; its home is kept): the next connection, or "
                    f"`leeward start {env.name}`, starts it."
                ),
            )
        if record.state is HealthState.STOPPED and env.state in REACHABLE_STATES:
            return self._publish(
                record, state=HealthState.CONNECTING, reason="Started again; not probed yet."
            )
        if env.state in (EnvironmentState.DELETING, EnvironmentState.FAILED):
            return self._publish(
                record,
                state=HealthState.UNREACHABLE,
                reason=f"{env.name} is {env.state.value}: {env.status_message}".rstrip(": "),
            )
        return self._publish(record)

    def _record(self, watch: _Watch) -> HealthRecord:
        env = watch.environment
        record = self._base.get(env.id)
        if record is None:
            now = self.clock.now()
            record = HealthRecord(
                environment_id=env.id,
                name=env.name,
                state=HealthState.CONNECTING,
                environment_state=env.state,
                region=env.region,
                host=env.host,
                reason="Not probed yet.",
                fleet_reachable=self.fleet_reachable,
                since=now,
            )
        return record.model_copy(
            update={
                "name": env.name,
                "environment_state": env.state,
                "region": env.region,
                "host": env.host,
            }
        )

    def _publish(
        self, record: HealthRecord, *, force: bool = False, **changes: Any
    ) -> HealthRecord:
        base = record.model_copy(update=changes)
        new = self._overlay(base)
        old = self.records.get(record.environment_id)
        if old is not None and old.state != new.state:
            new.since = self.clock.now()
        if force or old is None or _worth_telling(old, new):
            self.notify(new)
        if new.environment_state != EnvironmentState.DELETED:
            self._base[new.environment_id] = base
            self.records[new.environment_id] = new
        else:
            self._base.pop(new.environment_id, None)
        return new


def _worth_telling(old: HealthRecord, new: HealthRecord) -> bool:
    keys = (
        "state",
        "reason",
        "fleet_reachable",
        "host",
        "region",
        "environment_state",
        "name",
        "sessions",
        "route",
        "dns_bypass",
    )
    if any(getattr(old, k) != getattr(new, k) for k in keys):
        return True
    if (old.rtt_ms is None) != (new.rtt_ms is None):
        return True
    if old.rtt_ms is not None and new.rtt_ms is not None:
        return abs(new.rtt_ms - old.rtt_ms) > max(5.0, 0.25 * old.rtt_ms)
    return False
