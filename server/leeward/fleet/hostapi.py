"""The fleet's side of the host API: a `Provider` whose every act is a signed command to the
environment's host agent (`leeward host serve`), over HTTP on the network. The fleet never
touches an environment's processes or files itself; it asks the host it placed it on.

Where each host is comes from its heartbeats (kept in the store, so every replica knows); a
host that is not reachable is not asked: `HostUnreachable`, which leaves the environment as it
was, to be asked again (recovery) rather than failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import select

from leeward.common.clock import Clock
from leeward.common.hostauth import CommandSigner
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow, HostRow
from leeward.providers.base import EnvironmentSpec, HostUnreachable, ProviderError
from leeward_protocol.host import (
    BackupOrder,
    BackupOutcome,
    BackupProgress,
    BackupResult,
    HostStatus,
    MigrateIn,
    RestoreOrder,
    RestorePathsOrder,
    RestoreResult,
    RunningAnswer,
    RunningQuery,
)

log = logging.getLogger(__name__)

START_SECONDS = 900.0
"""A start may build the environment's image first (minutes on a fresh host)."""
COMMAND_SECONDS = 60.0
RESTORE_SECONDS = 6 * 3600.0
"""A restore writes a whole home: hours for a very big one."""
BACKUP_SILENCE = 300.0


@dataclass
class _Known:
    url: str | None
    reachable: bool | None
    isolates_owners: bool | None
    isolation: str


class HostsProvider:
    name = "hosts"

    def __init__(self, store: Store, signer: CommandSigner, clock: Clock) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._known: dict[str, _Known] = {}

    # -- what the hosts are ------------------------------------------------------------------

    async def refresh(self) -> None:
        """What the store knows of every host (other replicas hear heartbeats too)."""
        async with self._store.read() as session:
            rows = (await session.execute(select(HostRow))).scalars().all()
        known = {}
        for row in rows:
            report = json.loads(row.report) if row.report else {}
            known[row.name] = _Known(
                row.url,
                row.reachable,
                report.get("isolatesOwners"),
                str(report.get("isolation", "")),
            )
        self._known = known

    async def keep_fresh(self, seconds: float) -> None:
        """Read the hosts again every `seconds`, in every replica: heartbeats reach one
        replica each (a load balancer picks), and every replica places and asks hosts."""
        while True:
            await self._clock.sleep(seconds)
            try:
                await self.refresh()
            except Exception:  # the store is down for a moment: the next round reads it
                log.warning("reading the hosts failed; trying again", exc_info=True)

    def heard(self, name: str, status: HostStatus) -> None:
        """A heartbeat this replica answered: use it at once."""
        self._known[name] = _Known(status.url, True, status.isolates_owners, status.isolation)

    @property
    def isolates_owners(self) -> bool:
        """Only when every host that reported keeps owners apart (and one did): an environment
        may land on any of them."""
        reports = [k.isolates_owners for k in self._known.values() if k.isolates_owners is not None]
        return bool(reports) and all(reports)

    @property
    def isolation(self) -> str:
        said = sorted({k.isolation for k in self._known.values() if k.isolation})
        return "; ".join(said) or "not known yet: no host agent has reported"

    # -- the Provider interface --------------------------------------------------------------

    async def start(self, spec: EnvironmentSpec) -> None:
        await self._command(
            spec.host, "PUT", f"/v1/environments/{spec.id}", spec.to_wire().wire(), START_SECONDS
        )

    async def assign(self, spec: EnvironmentSpec) -> None:
        path = f"/v1/environments/{spec.id}/assign"
        await self._command(spec.host, "POST", path, spec.to_wire().wire(), START_SECONDS)

    async def stop(self, environment_id: str) -> None:
        host, _ = await self._placement(environment_id)
        await self._command(host, "DELETE", f"/v1/environments/{environment_id}", None)

    async def suspend(self, environment_id: str) -> None:
        host, _ = await self._placement(environment_id)
        await self._command(host, "POST", f"/v1/environments/{environment_id}/suspend", None)

    async def migrate(self, environment_id: str, host: str, blackout_seconds: float) -> None:
        current, leaving = await self._placement(environment_id)
        source = leaving or current
        body = MigrateIn(source=source, blackout_seconds=blackout_seconds).wire()
        path = f"/v1/environments/{environment_id}/migrate"
        await self._command(host, "POST", path, body, blackout_seconds + COMMAND_SECONDS)

    async def running(self, environment_ids: list[str]) -> set[str]:
        """Asked of each host that has some of them; those on a host that cannot be asked are
        not known to be up."""
        async with self._store.read() as session:
            rows = await session.execute(
                select(EnvironmentRow.id, EnvironmentRow.host).where(
                    EnvironmentRow.id.in_(environment_ids)
                )
            )
            by_host: dict[str, list[str]] = {}
            for env_id, host in rows.all():
                if host is not None:
                    by_host.setdefault(host, []).append(env_id)
        up: set[str] = set()
        for host, ids in by_host.items():
            try:
                answer = await self._command(
                    host, "POST", "/v1/running", RunningQuery(ids=ids).wire()
                )
            except HostUnreachable as exc:
                log.warning("%s; its environments count as not known to be up", exc)
                continue
            up.update(RunningAnswer.model_validate(answer).running)
        return up

    async def backup(
        self,
        environment_id: str,
        order: BackupOrder,
        on_progress: Callable[[BackupProgress], None] | None = None,
    ) -> BackupResult:
        host, _ = await self._placement(environment_id)
        path = f"/v1/environments/{environment_id}/backup"
        # No limit on the whole (a first backup of a big home takes long); restic's progress
        # lines come every second, so a host silent for BACKUP_SILENCE is gone.
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=BACKUP_SILENCE)
        outcome: BackupOutcome | None = None
        async with self._request(host, "POST", path, order.wire(), timeout) as response:
            async for line in response.content:
                fields = json.loads(line)
                if "percent" in fields:
                    if on_progress is not None:
                        on_progress(BackupProgress.model_validate(fields))
                else:
                    outcome = BackupOutcome.model_validate(fields)
        if outcome is None:
            raise HostUnreachable(f"host {host} stopped answering during the backup")
        if outcome.result is None:
            raise ProviderError(outcome.error or f"host {host}: the backup failed")
        return outcome.result

    async def restore(self, environment_id: str, order: RestoreOrder) -> RestoreResult:
        host, _ = await self._placement(environment_id)
        path = f"/v1/environments/{environment_id}/restore"
        answer = await self._command(host, "POST", path, order.wire(), RESTORE_SECONDS)
        return RestoreResult.model_validate(answer)

    async def restore_paths(self, environment_id: str, order: RestorePathsOrder) -> RestoreResult:
        host, _ = await self._placement(environment_id)
        path = f"/v1/environments/{environment_id}/restore-paths"
        answer = await self._command(host, "POST", path, order.wire(), RESTORE_SECONDS)
        return RestoreResult.model_validate(answer)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    # -- asking a host -----------------------------------------------------------------------

    async def _placement(self, environment_id: str) -> tuple[str, str | None]:
        async with self._store.read() as session:
            row = await session.get(EnvironmentRow, environment_id)
        if row is None or row.host is None:
            raise ProviderError(f"environment {environment_id} is on no host")
        return row.host, row.migrating_from

    async def _url(self, host: str) -> str:
        known = self._known.get(host)
        if known is None or known.url is None or known.reachable is not True:
            await self.refresh()
            known = self._known.get(host)
        if known is None:
            raise ProviderError(f"host {host} is not one of this fleet's")
        if known.url is None:
            raise HostUnreachable(
                f"host {host} has not registered: start `leeward host serve` on it "
                "(docs/operator.md)"
            )
        if known.reachable is not True:
            raise HostUnreachable(f"host {host} is unreachable (its agent is not heard from)")
        return known.url

    async def _command(
        self,
        host: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        seconds: float = COMMAND_SECONDS,
    ) -> Any:
        timeout = aiohttp.ClientTimeout(total=seconds, connect=5.0)
        async with self._request(host, method, path, body, timeout) as response:
            text = await response.text()
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    @contextlib.asynccontextmanager
    async def _request(
        self,
        host: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        limits: aiohttp.ClientTimeout,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed command's response, once its status says it was done (ProviderError with
        the host's sentence otherwise); HostUnreachable if the host did not answer (or
        stopped answering while the caller read)."""
        url = await self._url(host)
        data = b"" if body is None else json.dumps(body).encode()
        headers = self._signer.headers(method, path, host, data, self._clock.now().timestamp())
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.request(
                method, url + path, data=data, headers=headers, timeout=limits
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise ProviderError(f"host {host} refused ({response.status}): {_said(text)}")
                yield response
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if self._known.get(host) is not None:
                self._known[host].reachable = False  # ask the store again next time
            raise HostUnreachable(
                f"host {host} did not answer at {url}: {type(exc).__name__} {exc}".strip()
            ) from None


def _said(text: str) -> str:
    """The sentence of a host's refusal (its error body's message), or its first 500 chars."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("message", text[:500]))
    return text[:500]
