"""The control channel between the provider and its agent: a Unix socket, newline-delimited JSON.

`{"op": "status"}` and `{"op": "reload"}`; every answer has `"ok"`, and an `"error"` when it is
false. The socket is mode 0600 in a 0700 directory: only the agent's own user can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("leeward.agent.control")

Handler = Callable[[dict[str, object]], Awaitable[dict[str, object]]]

MAX_LINE = 64 * 1024


class ControlError(Exception):
    pass


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) or check that an existing one is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ControlError(f"{path} is not a directory of this user; refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _remove_stale(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _alive(path: Path) -> bool:
    try:
        async with asyncio.timeout(2.0):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def serve(path: Path, handler: Handler) -> asyncio.Server:
    """Listen on `path`; refuse if another live process already answers there."""
    private_dir(path.parent)
    if _exists(path):
        if await _alive(path):
            raise ControlError(f"another agent already answers on {path}")
        _remove_stale(path)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    answer: dict[str, object] = {"ok": False, "error": f"bad request: {exc}"}
                else:
                    try:
                        answer = await handler(message)
                    except Exception as exc:
                        log.exception("control request %r failed", message.get("op"))
                        answer = {"ok": False, "error": str(exc) or type(exc).__name__}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(connected, str(path), limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


async def request(path: Path, message: dict[str, object]) -> dict[str, object]:
    """Send one request, return the answer; ControlError when the agent cannot be asked.

    Callers bound it with `asyncio.timeout`: a reload can take as long as closing connections."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
        try:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        line = await exchange()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ControlError(f"cannot reach the agent's control socket: {reason}") from None
    if not line:
        raise ControlError("the agent closed the control socket without answering")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ControlError("the agent's answer is not a JSON object")
    return answer
