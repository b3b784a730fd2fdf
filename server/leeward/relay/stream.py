"""One relay session's byte streams: sequence numbers, acknowledgements, bounded replay buffers.

An `Endpoint` is one side of a session. What it sends stays in its replay buffer until the peer
acknowledges it; a link (one TCP connection after its handshake) can die at any byte, and the
next link replays what the peer has not received. The buffer bounds the bytes in flight: a
sender waits for acknowledgements rather than outgrow it, so a peer that asks for bytes the
buffer no longer holds has lost its own state, and the session cannot go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable

from leeward.relay.frames import (
    CHUNK,
    Kind,
    ProtocolError,
    data_frame,
    frame,
    offset_frame,
    offset_of,
    read_frame,
)

MIB = 1 << 20


class RelayFailure(Exception):
    """The session cannot go on; `cause` is a short code, the message one line for the user."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def overflow(capacity: int) -> RelayFailure:
    return RelayFailure(
        "overflow",
        f"replay buffer overflowed ({capacity / MIB:g} MiB): the peer needs bytes that are no "
        "longer kept",
    )


class ReplayBuffer:
    """Sent bytes from offset `base` (the first unacknowledged) to `end`, at most `capacity`."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the replay buffer needs room for at least one byte")
        self.capacity = capacity
        self.base = 0
        self.size = 0
        self._chunks: collections.deque[bytes] = collections.deque()

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def append(self, data: bytes) -> None:
        if len(data) > self.free:
            raise overflow(self.capacity)
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def ack(self, offset: int) -> None:
        """The peer has everything before `offset`: forget it."""
        if offset > self.end:
            raise ProtocolError(f"acknowledgement of {offset} beyond the {self.end} bytes sent")
        drop = offset - self.base
        while drop > 0:
            head = self._chunks[0]
            if len(head) <= drop:
                self._chunks.popleft()
                drop -= len(head)
                self.base += len(head)
                self.size -= len(head)
            else:
                self._chunks[0] = head[drop:]
                self.base += drop
                self.size -= drop
                drop = 0

    def since(self, offset: int) -> list[bytes]:
        """The kept bytes from `offset` on, as chunks of at most CHUNK bytes."""
        if offset < self.base:
            raise overflow(self.capacity)
        if offset > self.end:
            raise ProtocolError(f"resume from {offset} beyond the {self.end} bytes sent")
        skip = offset - self.base
        out: list[bytes] = []
        for chunk in self._chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece, skip = chunk[skip:], 0
            out.extend(piece[i : i + CHUNK] for i in range(0, len(piece), CHUNK))
        return out


Deliver = Callable[[bytes], Awaitable[None]]
DeliverEnd = Callable[[], Awaitable[None]]


class Endpoint:
    """One side of a session, whichever link carries it now.

    `send`/`send_end` take the local bytes; `deliver`/`deliver_end` get the peer's bytes, each
    exactly once and in order. `run_link` carries the session over one link until that link
    dies (its reason is returned) or the session is finished."""

    def __init__(
        self,
        capacity: int,
        deliver: Deliver,
        deliver_end: DeliverEnd,
        *,
        ping_every: float = 2.5,
        dead_after: float = 10.0,
        ack_every: int = 256 * 1024,
    ) -> None:
        self.outbox = ReplayBuffer(capacity)
        self.received = 0
        self.rtt: float | None = None
        self._deliver = deliver
        self._deliver_end = deliver_end
        self._ping_every = ping_every
        self._dead_after = dead_after
        self._ack_every = min(ack_every, max(1, capacity // 4))
        self._acked_sent = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._link: asyncio.StreamWriter | None = None
        self._link_lock = asyncio.Lock()
        self._space = asyncio.Event()
        self._space.set()
        self.end_at: int | None = None
        """Where our stream ends, once the local side ended it."""
        self._peer_end_at: int | None = None
        self.peer_ended = False
        self.finished = asyncio.Event()
        """Both streams ended and the peer has all of ours."""
        self.heard = False
        """Whether any frame came from the peer inside the session (it knows the session)."""

    # -- the local side ------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self.outbox.free == 0:
                self._space.clear()
                await self._space.wait()
            n = min(self.outbox.free, CHUNK, len(view))
            chunk, view = bytes(view[:n]), view[n:]
            seq = self.outbox.end
            self.outbox.append(chunk)
            link = self._link
            if link is not None:
                link.write(data_frame(seq, chunk))
                try:
                    await link.drain()
                except (ConnectionError, RuntimeError):
                    link.transport.abort()  # the link's reader sees it; the bytes are kept

    def send_end(self) -> None:
        if self.end_at is None:
            self.end_at = self.outbox.end
            self._write(offset_frame(Kind.END, self.end_at))
            self._check_finished()

    # -- links ---------------------------------------------------------------------------

    async def run_link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_received: int
    ) -> str:
        """Carry the session over this link; returns why it ended. RelayFailure when the
        session cannot go on (the peer needs bytes no longer kept)."""
        current = self._link
        if current is not None:
            current.transport.abort()  # a newer link replaces it
        async with self._link_lock:
            try:
                self.outbox.ack(peer_received)
                replay = self.outbox.since(peer_received)
            except ProtocolError as exc:
                writer.transport.abort()
                return str(exc)
            except RelayFailure:
                writer.transport.abort()
                raise
            self._space.set()
            seq = peer_received
            for chunk in replay:
                writer.write(data_frame(seq, chunk))
                seq += len(chunk)
            if self.end_at is not None:
                writer.write(offset_frame(Kind.END, self.end_at))
            writer.write(offset_frame(Kind.ACK, self.received))
            self._acked_sent = self.received
            self._link = writer
            reading = asyncio.create_task(self._read(reader))
            pinging = asyncio.create_task(self._ping(writer))
            finished = asyncio.create_task(self._finished())
            try:
                done, _ = await asyncio.wait(
                    {reading, pinging, finished}, return_when=asyncio.FIRST_COMPLETED
                )
                if finished in done:
                    # Half-close and read on until the peer does too: closing with its last
                    # acknowledgement unread could reset the link before it arrives.
                    pinging.cancel()
                    with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    await asyncio.wait({reading}, timeout=2.0)
                    return "finished"
                ended = reading if reading in done else pinging
                error = ended.exception()
                if isinstance(error, RelayFailure):
                    raise error
                return _reason(error)
            finally:
                for task in (reading, pinging, finished):
                    task.cancel()
                await asyncio.gather(reading, pinging, finished, return_exceptions=True)
                if self._link is writer:
                    self._link = None
                writer.transport.abort()

    async def _finished(self) -> None:
        await self.finished.wait()

    def drop_link(self) -> None:
        """Drop the current link (as a reset would); the session stays."""
        if self._link is not None:
            self._link.transport.abort()

    @property
    def untouched(self) -> bool:
        """Nothing of either stream has been delivered or acknowledged: a new session can
        take this one's place without anyone noticing."""
        return self.received == 0 and self.outbox.base == 0 and not self.peer_ended

    @property
    def linked(self) -> bool:
        return self._link is not None

    # -- inside a link ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._link is not None:
            self._link.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                async with asyncio.timeout(self._dead_after):
                    kind, payload = await read_frame(reader)
            except TimeoutError:
                raise LinkSilent(self._dead_after) from None
            self.heard = True
            if kind is Kind.DATA:
                await self._on_data(payload)
            elif kind is Kind.ACK:
                self.outbox.ack(offset_of(payload))
                self._space.set()
                self._check_finished()
            elif kind is Kind.END:
                end = offset_of(payload)
                if end < self.received or (
                    self._peer_end_at is not None and end != self._peer_end_at
                ):
                    raise ProtocolError("the peer moved the end of its stream")
                self._peer_end_at = end
                await self._maybe_end()
            elif kind is Kind.PING:
                self._write(frame(Kind.PONG, payload))
            elif kind is Kind.PONG:
                with contextlib.suppress(ValueError):
                    self.rtt = max(0.0, time.monotonic() - float(payload.decode()))
            else:
                raise ProtocolError(f"{kind.name} frame inside a session")

    async def _on_data(self, payload: bytes) -> None:
        if len(payload) < 8:
            raise ProtocolError("short DATA frame")
        seq = offset_of(payload[:8])
        if seq > self.received:
            raise ProtocolError(f"DATA at {seq} leaves a gap after {self.received}")
        fresh = (
            payload[8 + (self.received - seq) :] if seq + len(payload) - 8 > self.received else b""
        )
        if self._peer_end_at is not None and self.received + len(fresh) > self._peer_end_at:
            raise ProtocolError("DATA after the end of the peer's stream")
        if fresh:
            await self._deliver(fresh)
            self.received += len(fresh)
            if self.received - self._acked_sent >= self._ack_every:
                self._send_ack()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(0.02, self._send_ack)
        await self._maybe_end()

    def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._link is not None and self._acked_sent != self.received:
            self._link.write(offset_frame(Kind.ACK, self.received))
            self._acked_sent = self.received

    async def _maybe_end(self) -> None:
        if self.peer_ended or self._peer_end_at is None or self.received != self._peer_end_at:
            return
        self.peer_ended = True
        self._send_ack()
        await self._deliver_end()
        self._check_finished()

    def _check_finished(self) -> None:
        if self.peer_ended and self.end_at is not None and self.outbox.base == self.end_at:
            self.finished.set()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self._ping_every)
            writer.write(frame(Kind.PING, repr(time.monotonic()).encode()))
            await writer.drain()


class LinkSilent(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"nothing heard for {seconds:g} s")


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "link closed"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed"
    text = str(exc) or type(exc).__name__
    return text
