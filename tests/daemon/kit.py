"""The real daemon (`leeward daemon --stdio`) as a subprocess, driven by pygls's LanguageClient,
as VS Code drives it: initialize, requests, notifications, `$/progress`, shutdown; or over its
raw pipes (`RawDaemon`), for the bytes and messages no well-behaved client sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
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
        self.announcements: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        """Each notification the daemon sent, in order (flattened from its lists)."""
        self.first_seen: dict[tuple[str, int, int], float] = {}
        """When (wall clock) each announcement revision, ("announcement", id, revision), and
        each notification, ("notification", id, 0), first reached the client: for benchmarks."""
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

        @client.feature("leeward/announcements")
        def on_announcements(params: Any) -> None:
            arrived = time.time()
            self.announcements.append(params)
            for a in params["announcements"]:
                self.first_seen.setdefault(("announcement", a["id"], a["revision"]), arrived)
            self._poke()

        @client.feature("leeward/notifications")
        def on_notifications(params: Any) -> None:
            arrived = time.time()
            self.notifications.extend(params["notifications"])
            for n in params["notifications"]:
                self.first_seen.setdefault(("notification", n["id"], 0), arrived)
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
                        async with asyncio.timeout(0.5):  # not wait_for: see pyproject's TID251
                            await self._changed.wait()
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


class RawDaemon:
    """The real daemon over its raw pipes, for what no well-behaved client sends: bytes in, and
    its messages out, read strictly (a frame the daemon writes wrong fails the test). Answers are
    matched by id; whatever else arrives (notifications, errors with a null id) is kept in
    `seen`, in order."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[dict[str, Any]] = []
        self._ids = iter(range(1_000_000, 2_000_000))

    @classmethod
    async def start(cls, sandbox: Sandbox, options: dict[str, Any] | None = None) -> RawDaemon:
        stderr = (sandbox.root / "daemon.stderr").open("ab")
        process = await asyncio.create_subprocess_exec(
            str(LEEWARD),
            "daemon",
            "--stdio",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=sandbox.env,
        )
        stderr.close()
        daemon = cls(process)
        params = {"processId": None, "capabilities": {}, "initializationOptions": options or {}}
        answer = await daemon.request("initialize", params, timeout=30)
        assert "result" in answer, answer
        await daemon.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        return daemon

    @staticmethod
    def frame(payload: Any) -> bytes:
        body = json.dumps(payload).encode()
        return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)

    async def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def send(self, payload: Any) -> None:
        await self.write(self.frame(payload))

    def new_id(self) -> int:
        return next(self._ids)

    async def read(self, timeout: float = 30) -> dict[str, Any]:
        """The daemon's next message (it must be framed exactly as LSP says)."""
        stdout = self.process.stdout
        assert stdout is not None
        async with asyncio.timeout(timeout):
            length = None
            while (line := await stdout.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
            assert length is not None, "a frame without Content-Length"
            message = json.loads(await stdout.readexactly(length))
        assert isinstance(message, dict)
        return message

    async def answer_to(self, msg_id: int | str, timeout: float = 30) -> dict[str, Any]:
        """The answer to request `msg_id`; what arrives before it goes to `seen`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await self.read(max(left, 0.01))
            except (TimeoutError, asyncio.IncompleteReadError) as exc:
                code = self.process.returncode
                raise AssertionError(
                    f"no answer to request {msg_id} ({type(exc).__name__}; daemon exit code "
                    f"{code}; before it: {self.seen[-5:]})"
                ) from None
            if message.get("id") == msg_id and ("result" in message or "error" in message):
                return message
            self.seen.append(message)

    async def request(self, method: str, params: Any = None, timeout: float = 30) -> dict[str, Any]:
        msg_id = self.new_id()
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            payload["params"] = params
        await self.send(payload)
        return await self.answer_to(msg_id, timeout)

    async def answers_status(self, timeout: float = 30) -> None:
        """It is alive and reads what comes next: a request is answered."""
        answer = await self.request("leeward/status/get", {}, timeout)
        assert answer.get("result", {}).get("version"), answer

    def take_orphan_errors(self) -> list[dict[str, Any]]:
        """The errors with a null id seen so far (unreadable messages), taken out of `seen`."""
        errors = [m for m in self.seen if "error" in m and m.get("id", "absent") is None]
        self.seen = [m for m in self.seen if m not in errors]
        return [e["error"] for e in errors]

    def logs(self) -> list[str]:
        return [m["params"]["message"] for m in self.seen if m.get("method") == "window/logMessage"]

    def peak_memory_bytes(self) -> int:
        """The daemon's peak resident memory (Linux's VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    async def stop(self) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("shutdown", timeout=10)
                await self.send({"jsonrpc": "2.0", "method": "exit"})
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode
