"""The whole relay (the proxy's loop, the handshake, the agent's sessions) over loopback TCP
cut at random byte offsets in either direction: what comes back is byte-exact."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from leeward.common import sshcert
from leeward.fleet.ca import CertificateAuthority
from leeward.relay.agent import RelayServer, RelaySettings
from leeward.relay.candidates import Candidate, Fixed
from leeward.relay.proxy import Proxy, ProxySettings
from tests.conftest import free_endpoint, until

from .test_handshake import FQDN, echo, identity

Budget = tuple[int | None, int | None]


class Output:
    """Stands in for the proxy's stdout."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = 0

    def write(self, data: bytes) -> None:
        assert not self.ended
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.ended += 1


@contextlib.asynccontextmanager
async def cutting_path(address: str, port: int, budgets: list[Budget]) -> AsyncIterator[int]:
    """A TCP path to the agent; its n-th connection dies after budgets[n] bytes up / down."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []
    budgets = list(budgets)
    total = [0]

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(address, port)
        writers.extend([writer, up_writer])
        up, down = budgets.pop(0) if budgets else (None, None)
        total[0] += 1

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, left: int | None) -> None:
            try:
                while data := await r.read(4096):
                    if left is not None and len(data) >= left:
                        w.write(data[:left])
                        cut()
                        return
                    if left is not None:
                        left -= len(data)
                    w.write(data)
                    await w.drain()
                w.write_eof()
            except (ConnectionError, RuntimeError, OSError):
                cut()

        for job in (pipe(reader, up_writer, up), pipe(up_reader, writer, down)):
            task = asyncio.create_task(job)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accepted, address, 0)
    try:
        yield server.sockets[0].getsockname()[1]
        event(f"links: {total[0]}")
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.close()


async def relay_through_cuts(
    ca: CertificateAuthority, payload: bytes, budgets: list[Budget], buffer: int
) -> tuple[int, Output, int]:
    address, port = free_endpoint()
    server = RelayServer(identity(ca), FQDN, echo, RelaySettings(buffer_bytes=buffer))
    await server.listen(address, port)
    try:
        async with cutting_path(address, port, budgets) as path_port:
            cas = [sshcert.public_blob(ca.host_ca_public)]
            proxy = Proxy(
                "echo",
                Fixed(Candidate(address, path_port, FQDN, "test")),
                lambda fqdn: cas,
                ProxySettings(buffer_bytes=buffer, deadline=30),
            )
            stdin = asyncio.StreamReader()
            stdin.feed_data(payload)
            stdin.feed_eof()
            out = Output()
            async with asyncio.timeout(60):
                code = await proxy.run(stdin, out)  # type: ignore[arg-type]
                # The agent closes it when its side is done too.
                await until(lambda: not server.sessions, "the agent closed the session")
            return code, out, len(server.sessions)
    finally:
        await server.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.binary(max_size=2000)
    | st.integers(20_000, 400_000).map(lambda n: bytes(i * 7 % 251 for i in range(n))),
    budgets=st.lists(
        st.tuples(st.none() | st.integers(0, 150_000), st.none() | st.integers(0, 150_000)),
        min_size=1,
        max_size=4,
    ),
    buffer=st.sampled_from([4096, 65536, 8 << 20]),
)
# Found by this test: the first link dies inside the handshake; the agent drops that session.
@example(payload=b"n\x13", budgets=[(None, 963), (None, None)], buffer=4096)
@example(payload=b"", budgets=[(None, 0)], buffer=4096)
@example(payload=b"x" * 100_000, budgets=[(700, None), (0, 900), (None, 2000)], buffer=4096)
def test_the_relay_is_byte_exact_through_cuts_at_random_byte_offsets(
    ca: CertificateAuthority, payload: bytes, budgets: list[Budget], buffer: int
) -> None:
    code, out, left = asyncio.run(relay_through_cuts(ca, payload, budgets, buffer))
    assert code == 0
    assert bytes(out.data) == payload
    assert out.ended == 1
    assert left == 0, "a finished session is closed on the agent"
