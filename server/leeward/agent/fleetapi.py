"""The agent's HTTP client for the fleet: JSON in, JSON out, a bearer token and a deadline.

The standard library's client, in a daemon thread: the agent makes a few requests a minute,
and an async HTTP library would cost every environment its memory. Every failure (no answer in time,
refused, not 2xx, not JSON) is one `FleetError` whose message says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer read (a batch of profile blobs is the biggest the fleet sends)."""


class FleetError(Exception):
    """A request to the fleet failed; `status` is the HTTP status when there was an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def request_json(
    method: str, url: str, token: str, body: object | None, within: float
) -> object:
    """`method` `url` with `body` as JSON (None: no body); the decoded JSON answer (None when
    empty). FleetError on anything but 2xx, or no complete answer `within` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetError(f"fleet URL {url!r} is not http(s)://host[:port]/...")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, method=method, headers=headers
    )

    def exchange() -> bytes:
        with urllib.request.urlopen(request, timeout=within) as answer:  # noqa: S310
            return bytes(answer.read(MAX_ANSWER_BYTES))

    try:
        async with asyncio.timeout(within + 1):
            raw = await _in_daemon_thread(exchange)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace")
        raise FleetError(f"the fleet answered {exc.code}: {detail}", exc.code) from None
    except TimeoutError:
        raise FleetError(f"no answer from {parts.netloc} within {within:g} s") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise FleetError(f"cannot reach {parts.netloc}: {reason}") from None
    except OSError as exc:
        raise FleetError(f"cannot reach {parts.netloc}: {exc.strerror or exc}") from None
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise FleetError("the fleet's answer is not JSON") from None


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    """`work()` in a thread of its own that the process does not wait for at exit: a long poll
    held by the fleet must not delay the agent's stop (the default executor's threads are
    joined when the loop closes)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return  # cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="fleet-request", daemon=True).start()
    return await done
