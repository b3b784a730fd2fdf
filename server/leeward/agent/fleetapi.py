"""The agent's HTTP client for the fleet: JSON in, JSON out, a bearer token and a deadline.

The standard library's client, in a daemon thread: the agent makes a few requests a minute,
and an async HTTP library would cost every environment its memory. Every failure (no answer in time,
refused, not 2xx, not JSON) is one `FleetError` whose message says what happened.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import TypeVar
from urllib.parse import urlsplit

from leeward.common.errors import FleetError
from leeward.common.threads import in_daemon_thread

T = TypeVar("T")

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer read (a batch of profile blobs is the biggest the fleet sends)."""


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
            raw = await in_daemon_thread(exchange, "fleet-request")
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode(errors="replace")
        answered = FleetError.from_answer(exc.code, text)
        detail = answered.message if answered is not None else text[:300]
        raise FleetError(
            f"the fleet answered {exc.code}: {detail}",
            status=exc.code,
            code=answered.code if answered is not None else None,
            field=answered.field if answered is not None else None,
        ) from None
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


# END
