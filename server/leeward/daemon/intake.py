"""What the client sends, read and checked before pygls dispatches it, so that every request gets
an answer and nothing the client sends can stop the daemon or leave it deaf.

The bytes are cut into messages by `framing.FrameReader` (bounded; it resynchronises after a
bad frame). Each frame it cannot read is answered with a JSON-RPC parse error (-32700, id null:
the client learns that something it sent was lost) and logged. A message that is not a JSON-RPC
2.0 request, notification or response is answered with "invalid request" (-32600; with its id
when it has a usable one), LSP params of the wrong shape with "invalid params" (-32602) naming
the field, a request after `shutdown` with "invalid request", as LSP says. Notifications are
never answered, whatever is wrong with them: they are logged. The rest goes to pygls's
`handle_message`, which answers a request for a method the daemon does not serve with "method
not found" (-32601).

pygls reads stdin with its own loop (`pygls.io_.run_async`), which has none of these bounds; the
server's `start_io` runs `serve` instead, with pygls's writer and dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import cattrs
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
)
from pygls.protocol import JsonRPCProtocol

from leeward.daemon.framing import FRAME_STALL_SECONDS, Event, FrameReader, Message, Unreadable

if TYPE_CHECKING:
    MsgId = int | str | None

log = logging.getLogger(__name__)

READ_BYTES = 64 << 10
"""One read from the client's stream; at most READ_AHEAD of them wait to be parsed."""
READ_AHEAD = 4


@dataclass(frozen=True)
class Refusal:
    """Why a message is not JSON-RPC 2.0, and whom to tell."""

    reason: str
    reply_to: MsgId
    """The id of the answer: the message's own when it is a usable one, else null."""
    answer: bool
    """False for a notification: JSON-RPC never answers one, even a bad one."""


def refusal(payload: Any) -> Refusal | None:
    """What is wrong with a decoded message as JSON-RPC 2.0 (LSP's ids: integers or strings);
    None when nothing is."""
    if not isinstance(payload, dict):
        what = "an array (batches are not part of LSP)" if isinstance(payload, list) else "that"
        return Refusal(f"a message is a JSON object, not {what}", None, answer=True)
    has_id = "id" in payload
    msg_id = payload.get("id")
    usable_id = type(msg_id) in (int, str)  # `type`: True is an int to isinstance
    reply_to = msg_id if usable_id else None
    answer = has_id or "method" not in payload
    if payload.get("jsonrpc") != "2.0":
        return Refusal('"jsonrpc" must be "2.0"', reply_to, answer)
    if has_id and not usable_id:
        return Refusal("id must be an integer or a string", None, answer=True)
    if "method" in payload:
        if not isinstance(payload["method"], str):
            return Refusal("method must be a string", reply_to, answer)
        if not isinstance(payload.get("params"), dict | list | None):
            return Refusal("params must be an object or an array", reply_to, answer)
        return None
    if has_id and ("result" in payload or "error" in payload):
        return None  # the client's answer to one of the daemon's requests
    return Refusal("not a request, a notification or a response", reply_to, answer=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def params_sentence(exc: BaseException) -> str:
    """pygls's "Invalid Params" for an LSP method, with the field and the fault cattrs found
    (`params.textDocument: required field missing.`)."""
    cause = exc.__cause__
    if not isinstance(cause, cattrs.ClassValidationError | cattrs.IterableValidationError):
        return "params: not what this method takes."
    first = cattrs.transform_error(cause)[0]
    fault, _, where = first.rpartition(" @ $.")
    if not fault:
        return f"params: {first}."
    return f"{'.'.join(_camel(part) for part in where.split('.'))}: {fault}."


class Intake:
    """Feeds the frames of one client to pygls's protocol, answering what pygls would not."""

    def __init__(self, protocol: JsonRPCProtocol) -> None:
        self.protocol = protocol
        self.frames = FrameReader()
        self.shut_down = False
        """`shutdown` was requested: every later request but `exit` is refused."""

    def answer_error(self, msg_id: MsgId, exc: JsonRpcException) -> None:
        # pygls's own error message leaves out a null id, which JSON-RPC requires (clients
        # drop an error without one): this one is written as a plain object.
        error = {"code": exc.code, "message": exc.message}
        self.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def take(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Unreadable):
                log.warning("an unreadable message from the client: %s", event.reason)
                self.answer_error(None, JsonRpcParseError(f"Unreadable message: {event.reason}."))
            else:
                self.deliver(event)

    def deliver(self, message: Message) -> None:
        payload = message.payload
        bad = refusal(payload)
        if bad is not None:
            log.warning("a message that is not JSON-RPC 2.0: %s", bad.reason)
            if bad.answer:
                self.answer_error(
                    bad.reply_to, JsonRpcInvalidRequest(f"Invalid request: {bad.reason}.")
                )
            return
        assert isinstance(payload, dict)
        method = payload.get("method")
        is_request = method is not None and "id" in payload
        if is_request and self.shut_down and method != types.EXIT:
            self.answer_error(
                payload["id"],
                JsonRpcInvalidRequest("The daemon is shutting down: no more requests."),
            )
            return
        try:
            structured = self.protocol.structure_message(payload)
        except JsonRpcInvalidParams as exc:
            reason = params_sentence(exc)
            log.warning("%s: invalid params: %s", method, reason)
            if is_request:
                self.answer_error(payload["id"], JsonRpcInvalidParams(reason))
            return
        except JsonRpcException as exc:
            log.warning("%s: cannot read the message: %s", method, exc.message)
            if is_request:
                self.answer_error(
                    payload["id"], JsonRpcInvalidRequest(f"Invalid request: {exc.message}.")
                )
            return
        if is_request and method == types.SHUTDOWN:
            self.shut_down = True
        try:
            self.protocol.handle_message(structured)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            # pygls answers the errors of handlers; this is one in pygls before a handler ran.
            log.error("%s: could not be dispatched: %s", method, exc)
            if is_request:
                self.answer_error(payload["id"], JsonRpcInternalError(f"{method} failed: {exc}"))


def _unsaid(record: logging.LogRecord) -> bool:
    """pygls logs a traceback for each message it cannot structure; `Intake` says it in a line."""
    return not record.getMessage().startswith("Unable to deserialize message")


def _pump(stream: BinaryIO, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """Blocking reads of the client's stream, handed to the event loop; b"" at the end. A thread
    of its own (a daemon thread: exiting does not wait for a read that may never return), since
    stdin may be anything, a pipe, a socket or a file."""
    fd = stream.fileno()
    while True:
        try:
            data = os.read(fd, READ_BYTES)
        except OSError as exc:
            log.error("cannot read from the client: %s", exc)
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
        except RuntimeError:  # the loop is gone: the daemon is exiting
            return
        if not data:
            return


async def serve(protocol: JsonRPCProtocol, stream: BinaryIO) -> None:
    """Read messages from `stream` until it ends (the client closed it: the daemon exits)."""
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_unsaid)
    intake = Intake(protocol)
    chunks: asyncio.Queue[bytes] = asyncio.Queue(READ_AHEAD)
    threading.Thread(
        target=_pump,
        args=(stream, asyncio.get_running_loop(), chunks),
        name="client stream",
        daemon=True,
    ).start()
    while True:
        stall = FRAME_STALL_SECONDS if intake.frames.partial else None
        try:
            async with asyncio.timeout(stall):
                data = await chunks.get()
        except TimeoutError:
            intake.take(intake.frames.give_up())
            continue
        if not data:
            if intake.frames.partial:
                log.warning("the client's stream ended in the middle of a message")
            log.info("the client closed the daemon's stdin: exiting")
            return
        intake.take(intake.frames.feed(data))
