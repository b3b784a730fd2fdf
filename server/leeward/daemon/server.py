"""`leeward daemon --stdio`: the JSON-RPC side (pygls 2.x). Handlers validate params into the
`leeward_protocol` model of their method at once, call the Daemon, and answer camelCase JSON.

Malformed params get a JSON-RPC "invalid params" error naming the field; a failure inside gets
the Daemon's one-sentence message; neither stops the daemon. Stdout carries JSON-RPC only: the
real stdin and stdout are moved to private descriptors at start, and descriptors 0 and 1 point
at /dev/null and stderr, so nothing (a stray print, a child process) can write into the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from lsprotocol import types
from pydantic import BaseModel, ValidationError
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    _params_field_structure_hook,
    default_converter,
)

from leeward import __version__
from leeward.client.paths import Paths
from leeward.common.validation import sentence
from leeward.daemon import backups
from leeward.daemon.errors import DaemonError
from leeward.daemon.intake import serve
from leeward_protocol.base import Request, Resource
from leeward_protocol.daemon import (
    METHODS,
    CreateParams,
    CreateStage,
    DaemonSettings,
    DismissParams,
    EnvironmentRef,
    ExtendParams,
    HealthQuery,
    SeenParams,
    SignInParams,
)

if TYPE_CHECKING:
    from leeward.daemon.service import Daemon
    from leeward.daemon.userconfig import Problem

log = logging.getLogger("leeward.daemon")

FLEET_ERROR = -32001
"""JSON-RPC error code of a request the fleet refused or could not answer; `data` has the
fleet's status, code and field."""

NOT_READY = -32002
"""A request before `initialize`."""


def _converter() -> Any:
    """pygls's converter, except that `leeward/...` params stay plain dicts: pydantic validates
    them (pygls would make nested namedtuples, which lose the structure pydantic needs)."""
    converter = default_converter()  # type: ignore[no-untyped-call]

    def structure(obj: dict[str, Any], cls: type) -> Any:
        if str(obj.get("method", "")).startswith("leeward/"):
            return cls(**{"params": None, **obj})  # params are optional in JSON-RPC
        return _params_field_structure_hook(obj, cls)  # type: ignore[no-untyped-call]

    converter.register_structure_hook(JsonRPCRequestMessage, structure)
    converter.register_structure_hook(JsonRPCNotification, structure)
    return converter


class LeewardServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("leeward", __version__, converter_factory=_converter)
        self.boot: asyncio.Task[Daemon] | None = None
        """Starts the Daemon after `initialize` has answered (its imports take a while)."""
        self.paths = Paths.default()

    def send(self, method: str, payload: Resource) -> None:
        self.protocol.notify(method, payload.model_dump(mode="json", by_alias=True))

    def publish_config_problems(self, path: Path, problems: list[Problem]) -> None:
        """config.toml's problems as diagnostics on the file (VS Code's Problems panel), and a
        warning that the last valid settings stay in force; an empty list clears them."""
        diagnostics = [
            types.Diagnostic(
                range=types.Range(
                    start=types.Position(line=p.line - 1, character=p.column - 1),
                    end=types.Position(line=p.line - 1, character=p.column - 1 + p.length),
                ),
                message=p.message,
                severity=types.DiagnosticSeverity.Error,
                source="leeward",
            )
            for p in problems
        ]
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=path.as_uri(), diagnostics=diagnostics)
        )
        if problems:
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Warning,
                    message=f"{path} has {len(problems)} problem(s), shown in Problems; the "
                    "last valid settings stay in force.",
                )
            )

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """pygls's `start_io` with the daemon's own reader (`intake.serve`: bounded frames, an
        answer to every request), pygls's writer and dispatch. Returns when the client closes
        the stream; `exit` exits with LSP's code (0 after `shutdown`, else 1)."""
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        code: str | int | None = None
        try:
            asyncio.run(serve(self.protocol, stdin or sys.stdin.buffer))
        except BrokenPipeError:
            log.error("the client closed the daemon's stdout: exiting")
        except SystemExit as exc:  # `exit`
            code = exc.code
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()  # type: ignore[no-untyped-call]
        if code is not None:
            sys.exit(code)

    def report_server_error(self, error: Exception, source: Any) -> None:
        # Request errors already go back in the response; say the rest in the log, not in a
        # popup (pygls's default), which would nag the user about what they cannot fix.
        log.error("%s", error)


def parse(model: type[Request], params: Any) -> Any:
    if params is None:
        params = {}
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise JsonRpcInvalidParams(sentence(exc, "params")) from None


Handler = Callable[[LeewardServer, "Daemon", Any], Awaitable[BaseModel]]


async def _daemon(ls: LeewardServer) -> Daemon:
    if ls.boot is None:
        raise JsonRpcException("The daemon is not initialized yet.", code=NOT_READY)
    return await asyncio.shield(ls.boot)


def handles(server: LeewardServer, method: str, work: Handler) -> None:
    params_model, _ = METHODS[method]

    async def handle(ls: LeewardServer, params: Any) -> Any:
        request = parse(params_model, params)
        try:
            result = await work(ls, await _daemon(ls), request)
        except DaemonError as exc:
            raise JsonRpcException(exc.message, code=FLEET_ERROR, data=exc.data) from None
        return result.model_dump(mode="json", by_alias=True)

    server.feature(method)(handle)


def _supports_progress(ls: LeewardServer) -> bool:
    window = ls.client_capabilities.window
    return bool(window and window.work_done_progress)


async def _create(ls: LeewardServer, daemon: Daemon, params: CreateParams) -> BaseModel:
    token = params.work_done_token
    if token is None and _supports_progress(ls):
        token = f"leeward-create-{uuid.uuid4()}"
        try:
            await ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: go on without progress
            log.debug("the client refused a progress token: %s", exc)
            token = None
    kind = params.request.kind
    if token is not None:
        ls.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title=f"Creating a {kind}", message="placing", percentage=0, cancellable=False
            ),
        )
    steps = list(CreateStage)

    async def progress(stage: CreateStage, message: str) -> None:
        log.info("create: %s", message)
        if token is not None:
            percentage = int(100 * steps.index(stage) / (len(steps) - 1))
            ls.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=message, percentage=percentage)
            )

    try:
        env = await daemon.create(params, progress)
    except DaemonError as exc:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=exc.message))
        raise
    if token is not None:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"{env.name} is ready"))
    return env


async def _boot(ls: LeewardServer, settings: DaemonSettings, log_file: Path | None) -> Daemon:
    """Import and start the Daemon once `initialize` has been answered: the client can go on
    (its first requests wait here) while the fleet client and its libraries load."""
    for _ in range(3):
        await asyncio.sleep(0)  # let pygls write the initialize result first
    from leeward.common.clock import SystemClock
    from leeward.daemon.service import Daemon

    daemon = Daemon(
        settings,
        paths=ls.paths,
        clock=SystemClock(),
        notify=ls.send,
        on_config_problems=ls.publish_config_problems,
    )
    daemon.log_file = str(log_file) if log_file else None
    await daemon.start()
    log.info("daemon %s ready (pid %d, log %s)", __version__, os.getpid(), log_file)
    return daemon


def build_server() -> LeewardServer:
    server = LeewardServer()

    @server.feature(types.INITIALIZE)
    async def initialize(ls: LeewardServer, params: types.InitializeParams) -> None:
        if ls.boot is not None:
            raise JsonRpcInvalidRequest(
                "The daemon is initialized already: initialize is sent once."
            )
        options = params.initialization_options or {}
        try:
            settings = DaemonSettings.model_validate(options)
        except ValidationError as exc:
            raise JsonRpcInvalidParams(
                f"initializationOptions: {sentence(exc, 'params')}"
            ) from None
        log_file = configure_logging(ls, settings, ls.paths)
        ls.boot = asyncio.get_running_loop().create_task(_boot(ls, settings, log_file))

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: LeewardServer, *_: Any) -> None:
        if ls.boot is not None:
            with contextlib.suppress(Exception):
                await (await asyncio.shield(ls.boot)).close()

    async def status(ls: LeewardServer, d: Daemon, _: Any) -> BaseModel:
        return d.status()

    async def sign_in(ls: LeewardServer, d: Daemon, p: SignInParams) -> BaseModel:
        return await d.sign_in(p)

    async def catalog(ls: LeewardServer, d: Daemon, _: Any) -> BaseModel:
        return await d.catalog()

    async def listing(ls: LeewardServer, d: Daemon, _: Any) -> BaseModel:
        return await d.list_environments()

    async def delete(ls: LeewardServer, d: Daemon, p: EnvironmentRef) -> BaseModel:
        return await d.delete(p.environment)

    async def extend(ls: LeewardServer, d: Daemon, p: ExtendParams) -> BaseModel:
        return await d.extend(p.environment, p.hours)

    async def connect(ls: LeewardServer, d: Daemon, p: EnvironmentRef) -> BaseModel:
        return await d.connect(p.environment)

    async def health(ls: LeewardServer, d: Daemon, p: HealthQuery) -> BaseModel:
        return await d.health(p)

    # What the fleet tells the user (daemon/inbox.py).
    async def announcements(ls: LeewardServer, d: Daemon, _: Any) -> BaseModel:
        return await d.answer(d.inbox.current())

    async def dismiss(ls: LeewardServer, d: Daemon, p: DismissParams) -> BaseModel:
        return await d.answer(d.inbox.dismiss(p.id, p.revision))

    async def notifications(ls: LeewardServer, d: Daemon, _: Any) -> BaseModel:
        return await d._call(lambda c: c.notifications())

    async def seen(ls: LeewardServer, d: Daemon, p: SeenParams) -> BaseModel:
        return await d.answer(d.inbox.seen(p.ids))

    table: dict[str, Handler] = {
        "leeward/status/get": status,
        "leeward/account/signIn": sign_in,
        "leeward/catalog/get": catalog,
        "leeward/environments/list": listing,
        "leeward/environments/create": _create,
        "leeward/environments/delete": delete,
        "leeward/environments/extend": extend,
        "leeward/environments/connect": connect,
        "leeward/health/list": health,
        "leeward/backups/list": backups.list_backups,
        "leeward/backups/show": backups.show_backup,
        "leeward/backups/now": backups.back_up_now,
        "leeward/backups/restore": backups.restore,
        "leeward/environments/move": backups.move,
        "leeward/announcements/list": announcements,
        "leeward/announcements/dismiss": dismiss,
        "leeward/notifications/list": notifications,
        "leeward/notifications/seen": seen,
    }
    for method, work in table.items():
        handles(server, method, work)
    missing = set(METHODS) - set(server.protocol.fm.features)
    assert not missing, f"methods without a handler: {missing}"
    return server


# ---------------------------------------------------------------------------------- logging


class ClientLogHandler(logging.Handler):
    """Log records to the client as `window/logMessage` (VS Code's output channel)."""

    LEVELS: ClassVar[dict[int, types.MessageType]] = {
        logging.ERROR: types.MessageType.Error,
        logging.WARNING: types.MessageType.Warning,
        logging.INFO: types.MessageType.Info,
        logging.DEBUG: types.MessageType.Log,
    }

    def __init__(self, server: LeewardServer) -> None:
        super().__init__()
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = self.LEVELS.get(record.levelno, types.MessageType.Log)
            if record.levelno >= logging.ERROR:
                kind = types.MessageType.Error
            self.server.window_log_message(
                types.LogMessageParams(type=kind, message=self.format(record))
            )
        except Exception:
            self.handleError(record)


def configure_logging(server: LeewardServer, settings: DaemonSettings, paths: Paths) -> Path | None:
    level = getattr(logging, settings.log_level.upper())
    ours = logging.getLogger("leeward")
    ours.setLevel(level)
    ours.propagate = True
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    to_client = ClientLogHandler(server)
    to_client.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    ours.addHandler(to_client)
    log_file = Path(settings.log_file) if settings.log_file else paths.state_dir / "daemon.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5 * 1024 * 1024, backupCount=2
        )
    except OSError as exc:
        log.warning("cannot write the log file %s (%s); logging to the client only", log_file, exc)
        return None
    to_file.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Once the client and the file have the log, stderr (which VS Code also shows, every
        # line as an error) keeps only what the others could not carry: nothing of ours.
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            root.removeHandler(handler)
        elif isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
            handler.addFilter(lambda record: not record.name.startswith("leeward"))
    root.addHandler(to_file)
    root.setLevel(min(level, logging.WARNING))
    # pygls logs every message it sends and receives at INFO and DEBUG: far too much.
    logging.getLogger("pygls").setLevel(logging.WARNING)
    return log_file


def _private_stdio() -> tuple[BinaryIO, BinaryIO]:
    """The JSON-RPC streams on private descriptors; 0 and 1 no longer reach the client."""
    rpc_in = os.fdopen(os.dup(0), "rb")
    rpc_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return rpc_in, rpc_out


class AnsweredErrors(logging.Filter):
    """pygls logs a traceback for every request whose handler raised a JSON-RPC error: invalid
    params, the fleet's refusal. Those are answers (the client has the sentence, and the log its
    line from `report_server_error`), not failures of the daemon: their tracebacks are dropped.
    Anything else a handler raises keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, JsonRpcException)


def serve_stdio() -> None:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="leeward daemon %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pygls.protocol.json_rpc").addFilter(AnsweredErrors())
    rpc_in, rpc_out = _private_stdio()
    server = build_server()
    server.start_io(rpc_in, rpc_out)
