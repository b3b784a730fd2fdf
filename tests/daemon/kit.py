"""The real daemon (`leeward daemon --stdio`) as a subprocess, driven by pygls's LanguageClient,
as VS Code drives it: initialize, requests, notifications, `$/progress`, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCResponseMessage,
    _params_field_structure_hook,
    default_converter,
)

from tests.cli.sandbox import LEEWARD, Sandbox
from tests.conftest import until


def _raw_converter() -> Any:
    """Keep `leeward/...` payloads and untyped results as plain dicts, as they are on the wire."""
    converter = default_converter()

    def notification(obj: dict[str, Any], cls: type) -> Any:
        if str(obj.get("method", "")).startswith("leeward/"):
            return cls(**obj)
        return _params_field_structure_hook(obj, cls)

    converter.register_structure_hook(JsonRPCNotification, notification)
    converter.register_structure_hook(JsonRPCResponseMessage, lambda obj, cls: cls(**obj))
    return converter


class DaemonClient:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.client = LanguageClient("leeward-tests", "1", converter_factory=_raw_converter)
        self.health: list[dict[str, Any]] = []
        self.health_arrived: list[float] = []
        """When each health notification arrived (wall clock), for benchmarks."""
        self.environments: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.logs: list[str] = []
        self.diagnostics: list[types.PublishDiagnosticsParams] = []
        self.messages: list[types.ShowMessageParams] = []
        self._changed = asyncio.Event()
        client = self.client

        @client.feature("leeward/health")
        def on_health(params: Any) -> None:
            self.health.append(params)
            self.health_arrived.append(time.time())
            self._poke()

        @client.feature("leeward/environments")
        def on_environments(params: Any) -> None:
            self.environments.append(params)
            self._poke()

        @client.feature("leeward/status")
        def on_status(params: Any) -> None:
            self.statuses.append(params)
            self._poke()

        @client.feature(types.PROGRESS)
        def on_progress(params: types.ProgressParams) -> None:
            value = params.value
            if not isinstance(value, dict):
                value = client.protocol._converter.unstructure(value)
            self.progress.setdefault(str(params.token), []).append(value)
            self._poke()

        @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def on_progress_create(params: types.WorkDoneProgressCreateParams) -> None:
            self.progress.setdefault(str(params.token), [])

        @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
            self.diagnostics.append(params)
            self._poke()

        @client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            self.messages.append(params)
            self._poke()

        @client.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: types.LogMessageParams) -> None:
            self.logs.append(params.message)

    def _poke(self) -> None:
        self._changed.set()

    async def start(self, options: dict[str, Any]) -> Any:
        await self.client.start_io(str(LEEWARD), "daemon", "--stdio", env=self.sandbox.env)
        result = await asyncio.wait_for(
            self.client.initialize_async(
                types.InitializeParams(
                    process_id=None,
                    root_uri=None,
                    capabilities=types.ClientCapabilities(
                        window=types.WindowClientCapabilities(work_done_progress=True)
                    ),
                    initialization_options=options,
                )
            ),
            30,
        )
        self.client.initialized(types.InitializedParams())
        return result

    async def request(self, method: str, params: Any = None, timeout: float = 120) -> Any:
        return await asyncio.wait_for(
            self.client.protocol.send_request_async(method, params), timeout
        )

    async def error_of(self, method: str, params: Any) -> JsonRpcException:
        try:
            result = await self.request(method, params)
        except JsonRpcException as exc:
            return exc
        raise AssertionError(f"{method} {params!r} succeeded: {result!r}")

    async def until(self, probe: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        """Wait for notifications until `probe()` returns something truthy (woken by each
        notification, not polling), with a deadline."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got = probe()
                    if got:
                        return got
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.5)
        except TimeoutError:
            raise AssertionError(f"{what or 'the notification'}: not within {timeout} s") from None

    async def poll(
        self, method: str, predicate: Callable[[Any], bool], timeout: float = 30.0
    ) -> Any:
        """Ask again (with a deadline) until the answer satisfies `predicate`; that answer."""
        answers: list[Any] = []

        async def satisfied() -> bool:
            answers.append(await self.request(method, {}))
            return predicate(answers[-1])

        await until(satisfied, f"{method} answered as expected", timeout=timeout)
        return answers[-1]

    def last_health(self, env_id: str) -> dict[str, Any] | None:
        for record in reversed(self.health):
            if record["environmentId"] == env_id:
                return record
        return None

    async def stop(self) -> int | None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown_async(None), 15)
            self.client.exit(None)
        server = self.client._server
        code = None
        if server is not None:
            try:
                code = await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), 5)
        return code


@contextlib.asynccontextmanager
async def running_daemon(sandbox: Sandbox, options: dict[str, Any]) -> AsyncIterator[DaemonClient]:
    daemon = DaemonClient(sandbox)
    await daemon.start(options)
    try:
        yield daemon
    finally:
        await daemon.stop()
