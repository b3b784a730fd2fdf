"""Heartbeats: the agent tells the fleet it is alive, every few seconds, whatever happens.

A fleet that is down, slow or refusing never stops or blocks the agent: each beat has a
deadline, failures are logged and retried with backoff and jitter. The body is
`leeward_protocol.fleet.AgentHeartbeat` on the wire (tests check it against the model); it is
written out here so the agent does not load every protocol model (memory per environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("leeward.agent.heartbeat")

MAX_BACKOFF_SECONDS = 60.0


class HeartbeatError(Exception):
    pass


@dataclass(frozen=True)
class Beat:
    fleet_url: str
    token: str
    environment_id: str
    sessions: int
    agent_version: str

    def body(self) -> dict[str, object]:
        return {
            "environmentId": self.environment_id,
            "sessions": self.sessions,
            "agentVersion": self.agent_version,
        }


async def post_json(url: str, token: str, body: dict[str, object], within: float) -> object:
    """POST JSON, return the decoded JSON answer; HeartbeatError on anything but 2xx or no
    answer `within` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HeartbeatError(f"fleet URL {url!r} is not http(s)://host[:port]/...")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ssl_context = None
    if parts.scheme == "https":
        import ssl

        ssl_context = ssl.create_default_context()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    payload = json.dumps(body).encode()
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode() + payload

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ssl_context)
        try:
            writer.write(request)
            await writer.drain()
            return await _read_all(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        async with asyncio.timeout(within):
            raw = await exchange()
    except TimeoutError:
        raise HeartbeatError(f"no answer from {parts.netloc} within {within:g} s") from None
    except OSError as exc:
        raise HeartbeatError(f"cannot reach {parts.netloc}: {exc.strerror or exc}") from None
    return _parse_response(raw)


async def _read_all(reader: asyncio.StreamReader, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) <= limit:
        chunk = await reader.read(65536)
        if not chunk:
            return data
        data += chunk
    raise HeartbeatError("the fleet's answer is too large")


def _parse_response(raw: bytes) -> object:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise HeartbeatError("the fleet's answer is not HTTP")
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[1].isdigit():
        raise HeartbeatError(f"the fleet's answer is not HTTP: {lines[0][:80]!r}")
    status = int(status_parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    if not 200 <= status < 300:
        raise HeartbeatError(f"the fleet answered {status}: {body[:200].decode(errors='replace')}")
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        raise HeartbeatError("the fleet's answer is not JSON") from None


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class Heartbeat:
    """The loop. `beat()` builds each report from the agent's live state (sessions, token)."""

    def __init__(self, beat: Callable[[], Beat], interval: Callable[[], float]) -> None:
        self._beat = beat
        self._interval = interval
        self._adopted: float | None = None
        self._failures = 0
        self._wake = asyncio.Event()

    def reset(self) -> None:
        """The config changed (new token or fleet URL): beat now with it."""
        self._adopted = None
        self._failures = 0
        self._wake.set()

    @property
    def interval(self) -> float:
        return self._adopted if self._adopted is not None else self._interval()

    async def beat_once(self) -> None:
        beat = self._beat()
        url = beat.fleet_url.rstrip("/") + "/v1/agent/heartbeat"
        within = min(10.0, 2 * self.interval + 1)
        answer = await post_json(url, beat.token, beat.body(), within)
        if isinstance(answer, dict):
            interval = answer.get("intervalSeconds")
            if isinstance(interval, int | float) and 0 < interval <= 3600:
                self._adopted = float(interval)

    async def run(self) -> None:
        while True:
            try:
                await self.beat_once()
                if self._failures:
                    log.info("heartbeat: the fleet answers again after %d failures", self._failures)
                self._failures = 0
                delay = self.interval
            except HeartbeatError as exc:
                self._failures += 1
                # Log the first failures, then one in ten: a long fleet outage is not a flood.
                if self._failures <= 3 or self._failures % 10 == 0:
                    log.warning("heartbeat failed (%d in a row): %s", self._failures, exc)
                backoff = min(self.interval * 2 ** min(self._failures - 1, 6), MAX_BACKOFF_SECONDS)
                delay = max(self.interval, backoff) * random.uniform(0.8, 1.2)  # noqa: S311
            except Exception:
                self._failures += 1
                log.exception("heartbeat failed unexpectedly")
                delay = self.interval
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
