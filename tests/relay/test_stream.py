"""The relay's session core: whatever byte a link dies at, each side gets the other's stream
exactly once, in order, and the end of it."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leeward.relay.stream import MIB, Endpoint, RelayFailure, ReplayBuffer


class Side:
    def __init__(self, capacity: int) -> None:
        self.got = bytearray()
        self.ended = 0
        self.endpoint = Endpoint(capacity, self._deliver, self._deliver_end, ping_every=30)

    async def _deliver(self, data: bytes) -> None:
        assert not self.ended, "bytes after the end"
        self.got += data
        if len(data) > 1:
            await asyncio.sleep(0)  # let the other tasks interleave

    async def _deliver_end(self) -> None:
        self.ended += 1

    async def feed(self, payload: bytes, chunks: list[int]) -> None:
        at = 0
        for size in chunks:
            await self.endpoint.send(payload[at : at + size])
            at += size
        await self.endpoint.send(payload[at:])
        self.endpoint.send_end()


async def pipe(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(sock=sock)


async def cable(budget_ab: int | None, budget_ba: int | None) -> tuple[object, ...]:
    """A link between two endpoints that dies after `budget` bytes in either direction."""
    a_end, a_cable = socket.socketpair()
    b_end, b_cable = socket.socketpair()
    ra, wa = await pipe(a_end)
    rb, wb = await pipe(b_end)
    rca, wca = await pipe(a_cable)
    rcb, wcb = await pipe(b_cable)

    def cut() -> None:
        for w in (wca, wcb):
            w.transport.abort()

    async def forward(r: asyncio.StreamReader, w: asyncio.StreamWriter, budget: int | None) -> None:
        try:
            while data := await r.read(4096):
                if budget is not None and len(data) >= budget:
                    w.write(data[:budget])
                    cut()
                    return
                if budget is not None:
                    budget -= len(data)
                w.write(data)
                await w.drain()
            w.write_eof()
        except (ConnectionError, RuntimeError, OSError):
            cut()

    tasks = [
        asyncio.create_task(forward(rca, wcb, budget_ab)),
        asyncio.create_task(forward(rcb, wca, budget_ba)),
    ]
    return ra, wa, rb, wb, tasks


async def relay(
    capacity: int, a_payload: bytes, b_payload: bytes, cuts: list[tuple[int | None, int | None]]
) -> tuple[Side, Side]:
    a, b = Side(capacity), Side(capacity)
    feeds = [
        asyncio.create_task(a.feed(a_payload, [7, 1, 3000])),
        asyncio.create_task(b.feed(b_payload, [1, 65536])),
    ]
    links = 0
    async with asyncio.timeout(30):
        while not (a.endpoint.finished.is_set() and b.endpoint.finished.is_set()):
            budget = cuts[links] if links < len(cuts) else (None, None)
            links += 1
            ra, wa, rb, wb, tasks = await cable(*budget)  # type: ignore[misc]
            # What the handshake does: each side learns how much the other has received.
            a_received, b_received = a.endpoint.received, b.endpoint.received
            await asyncio.gather(
                a.endpoint.run_link(ra, wa, b_received),  # type: ignore[arg-type]
                b.endpoint.run_link(rb, wb, a_received),  # type: ignore[arg-type]
            )
            for task in tasks:  # type: ignore[attr-defined]
                task.cancel()
        await asyncio.gather(*feeds)
    return a, b


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    capacity=st.sampled_from([1024, 4096, 70_000, MIB]),
    a_payload=st.binary(max_size=3000)
    | st.integers(0, 300_000).map(lambda n: bytes(range(256)) * (n // 256) + b"x"),
    b_payload=st.binary(max_size=3000)
    | st.integers(0, 300_000).map(lambda n: bytes(reversed(range(256))) * (n // 256)),
    cuts=st.lists(
        st.tuples(st.none() | st.integers(0, 400_000), st.none() | st.integers(0, 400_000)),
        max_size=6,
    ),
)
def test_every_byte_arrives_once_in_order_whatever_byte_the_links_die_at(
    capacity: int,
    a_payload: bytes,
    b_payload: bytes,
    cuts: list[tuple[int | None, int | None]],
) -> None:
    a, b = asyncio.run(relay(capacity, a_payload, b_payload, cuts))
    assert bytes(b.got) == a_payload
    assert bytes(a.got) == b_payload
    assert (a.ended, b.ended) == (1, 1)


def test_the_replay_buffer_keeps_unacknowledged_bytes_and_refuses_what_it_dropped() -> None:
    buffer = ReplayBuffer(10)
    buffer.append(b"hello")
    buffer.append(b"world")
    with pytest.raises(RelayFailure, match=r"replay buffer overflowed"):
        buffer.append(b"!")
    buffer.ack(3)
    assert b"".join(buffer.since(3)) == b"loworld"
    assert b"".join(buffer.since(7)) == b"rld"
    with pytest.raises(RelayFailure, match=r"replay buffer overflowed \(") as caught:
        buffer.since(2)
    assert caught.value.cause == "overflow"
