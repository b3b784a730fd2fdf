"""The host agent's API (`leeward host serve`): what the fleet asks of the machine, as
protocol/leeward_protocol/host.py lists it. Every request but `/healthz` must be a command of this
host's fleet, signed with the key the host pinned (leeward.common.hostauth); anything else is
refused with a 401 that says why.

The engine is the local provider: agents as processes of this machine, each in its sandbox. With
the local fleet's fabric (`netns`), the host also routes its environments' addresses to itself:
an address is attached before its agent starts, moved here on a live migration (the route away,
the blackout, the address staged here, the agent listening here, the route back) and detached
when its environment is deleted.

The hosts of one machine share its disk: an environment's directory says which host it is on
(`host`), so that each host reports its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from leeward import __version__
from leeward.common.files import write_atomic
from leeward.common.hostauth import CommandVerifier, HostAuthError
from leeward.common.validation import first_fault
from leeward.host.config import HostAgentConfig
from leeward.providers.base import EnvironmentSpec, ProviderError
from leeward.providers.fabric import Fabric, FabricError
from leeward.providers.local import LocalProvider
from leeward_protocol.fleet import Hardware
from leeward_protocol.host import (
    BackupOrder,
    BackupOutcome,
    BackupProgress,
    HostEnvironment,
    HostStatus,
    MigrateIn,
    RestoreOrder,
    RestorePathsOrder,
    RunningAnswer,
    RunningQuery,
)

log = logging.getLogger("leeward.host")

M = TypeVar("M", bound=BaseModel)
BODY = web.RequestKey("body", bytes)
HOST_FILE = "host"
"""In an environment's directory: the name of the host it is on."""


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class HostAgent:
    def __init__(
        self,
        config: HostAgentConfig,
        provider: LocalProvider,
        fabric: Fabric | None,
        now: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        self.provider = provider
        self.fabric = fabric
        # Commands signed before this process started are refused: its memory of nonces
        # starts empty, and a replay from before a restart must not pass for new.
        self.verifier = CommandVerifier(config.fleet_key, config.name, now, not_before=now())
        self.url = ""
        """Where the fleet reaches this API (set once it listens)."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/v1/host", self._status)
        app.router.add_put("/v1/environments/{id}", self._start)
        app.router.add_post("/v1/environments/{id}/assign", self._assign)
        app.router.add_post("/v1/environments/{id}/migrate", self._migrate)
        app.router.add_delete("/v1/environments/{id}", self._stop)
        app.router.add_post("/v1/environments/{id}/suspend", self._suspend)
        app.router.add_post("/v1/environments/{id}/backup", self._backup)
        app.router.add_post("/v1/environments/{id}/restore", self._restore)
        app.router.add_post("/v1/environments/{id}/restore-paths", self._restore_paths)
        app.router.add_post("/v1/running", self._running)
        return app

    # -- the guard ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        body = await request.read()
        try:
            self.verifier.verify(request.method, request.path_qs, request.headers, body)
        except HostAuthError as exc:
            log.warning("refused %s %s: %s", request.method, request.path, exc)
            return _error(401, "unauthorized", f"{exc}.")
        request[BODY] = body
        try:
            return await handler(request)
        except Refused as exc:
            return _error(exc.status, exc.code, exc.message, exc.field)
        except ProviderError as exc:
            return _error(409, "conflict", str(exc))
        except FabricError as exc:
            return _error(409, "conflict", f"the network could not do it: {exc}")

    # -- routes ------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response((await self.status()).wire())

    async def _start(self, request: web.Request) -> web.Response:
        spec = self._spec(request)
        if self.fabric is not None:  # its address here before its agent listens on it
            await self.fabric.attach(spec.address, self.name)
        await self.provider.start(spec)
        await asyncio.to_thread(self._mark, spec.id)
        return web.json_response({"ok": True})

    async def _assign(self, request: web.Request) -> web.Response:
        spec = self._spec(request)
        await self.provider.assign(spec)
        return web.json_response({"ok": True})

    async def _migrate(self, request: web.Request) -> web.Response:
        env_id = self._id(request)
        body = _parse(request, MigrateIn)
        address = self.provider.address_of(env_id)
        if address is None:
            raise Refused(
                409,
                "conflict",
                f"environment {env_id} is not on this machine's disk: the local engine moves "
                "environments live only between hosts that share a disk (the hosts of one "
                "machine); move it cold instead",
            )
        if self.fabric is None:
            await self.provider.migrate(env_id, self.name, body.blackout_seconds)
        else:
            # The route away (new connections refused), the blackout, the address here, the
            # agent listening here, the route back: the network's part of a live migration.
            assert self.config.netns is not None
            await self.fabric.begin_move(address)
            await asyncio.sleep(body.blackout_seconds)
            await self.fabric.stage(address, self.name)
            try:
                await self.provider.attach(env_id, self.config.netns)
            finally:
                await self.fabric.attach(address, self.name)
        await asyncio.to_thread(self._mark, env_id)
        log.info("environment %s moved here from %s", env_id, body.source)
        return web.json_response({"ok": True})

    async def _stop(self, request: web.Request) -> web.Response:
        env_id = self._id(request)
        address = self.provider.address_of(env_id)
        await self.provider.stop(env_id)
        if self.fabric is not None and address is not None:
            await self.fabric.detach(address)
        return web.json_response({"ok": True})

    async def _suspend(self, request: web.Request) -> web.Response:
        """Idle stop: the agent and sandbox stop, the home stays on this host's disk, and the
        address stays attached here (a start of the same environment comes back here)."""
        await self.provider.suspend(self._id(request))
        return web.json_response({"ok": True})

    async def _backup(self, request: web.Request) -> web.StreamResponse:
        """A backup's answer is a stream of lines: its progress as restic reports it, then
        its outcome (so that a long backup is seen to be alive, and a failure still has its
        sentence once the status is sent)."""
        env_id = self._id(request)
        order = _parse(request, BackupOrder)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        lines: asyncio.Queue[bytes] = asyncio.Queue()

        def progress(p: BackupProgress) -> None:
            lines.put_nowait(json.dumps(p.wire()).encode() + b"\n")

        work = asyncio.ensure_future(self.provider.backup(env_id, order, progress))
        try:
            while not work.done():
                waiter = asyncio.ensure_future(lines.get())
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    await response.write(waiter.result())
                else:
                    waiter.cancel()
            try:
                outcome = BackupOutcome(result=work.result())
            except ProviderError as exc:
                outcome = BackupOutcome(error=str(exc))
        finally:
            if not work.done():  # the fleet went away: restic stops with it
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        await response.write(json.dumps(outcome.wire()).encode() + b"\n")
        await response.write_eof()
        return response

    async def _restore(self, request: web.Request) -> web.Response:
        result = await self.provider.restore(self._id(request), _parse(request, RestoreOrder))
        return web.json_response(result.wire())

    async def _restore_paths(self, request: web.Request) -> web.Response:
        order = _parse(request, RestorePathsOrder)
        result = await self.provider.restore_paths(self._id(request), order)
        return web.json_response(result.wire())

    async def _running(self, request: web.Request) -> web.Response:
        query = _parse(request, RunningQuery)
        up = await self.provider.running(query.ids)
        return web.json_response(RunningAnswer(running=sorted(up)).wire())

    # -- what the host is --------------------------------------------------------------------

    async def status(self) -> HostStatus:
        mine = await asyncio.to_thread(self.mine)
        up = await self.provider.alive(mine) if mine else set()
        return HostStatus(
            url=self.url,
            version=__version__,
            capacity=_capacity(),
            environments=sorted(up),
            isolation=self.provider.isolation,
            isolates_owners=self.provider.isolates_owners,
            network="namespaces" if self.fabric is not None else "loopback",
        )

    def mine(self) -> list[str]:
        """The environments on this machine's disk that are on this host."""
        found = []
        directory = self.config.data_dir
        for path in directory.iterdir() if directory.is_dir() else ():
            try:
                if (path / HOST_FILE).read_text().strip() == self.name:
                    found.append(path.name)
            except OSError:
                continue
        return found

    def _mark(self, env_id: str) -> None:
        write_atomic(self.config.data_dir / env_id / HOST_FILE, f"{self.name}\n")

    # -- parsing -----------------------------------------------------------------------------

    def _id(self, request: web.Request) -> str:
        return request.match_info["id"]

    def _spec(self, request: web.Request) -> EnvironmentSpec:
        wire = _parse(request, HostEnvironment)
        if wire.id != self._id(request):
            raise Refused(422, "invalid", "the body's id is not the path's", "id")
        if wire.host != self.name:
            raise Refused(422, "invalid", f"this is host {self.name}, not {wire.host}", "host")
        return EnvironmentSpec.from_wire(wire)


def _parse(request: web.Request, model: type[M]) -> M:
    try:
        data = json.loads(request[BODY] or b"null")
    except ValueError:
        raise Refused(400, "bad_request", "the body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fault = first_fault(exc)
        raise Refused(422, "invalid", fault.sentence("body"), fault.field) from None


def _capacity() -> Hardware:
    memory_gib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return Hardware(cpus=os.cpu_count() or 0, memory_gib=memory_gib, gpus=0)
