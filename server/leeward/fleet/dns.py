"""The fleet's DNS server for its zone: A records for `NAME.REGION.ZONE` and `NAME.ZONE`.

It answers from the store on every query (one indexed read), so a name resolves as soon as
its environment has an address, and stops resolving as soon as it is deleted. UDP and TCP on
one port; authoritative for the zone, REFUSED for every other name (it is not a resolver).

Operators stop it for exercises (`leeward admin dns stop`): *closed* (nothing listens; a
client is refused at once) or *black-holed* (the sockets stay open and nothing answers, as a
lost resolver looks to a client: the harder case, where only a client's own deadline helps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import dnslib
from aiohttp import web
from sqlalchemy import select

from leeward.fleet.state import FLEET
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import EnvironmentRow
from leeward_protocol.dns import (
    DnsMode,
    DnsStatus,
)

log = logging.getLogger(__name__)

ANSWERING_STATES = ("provisioning", "running", "migrating")
"""States whose environment's name resolves: it holds its address and is (or is about to be)
reachable. A migrating environment keeps its address: it is dark only for its blackout."""

_BIND_ATTEMPTS = 8
_SOA_TIMES = (1, 60, 30, 3600, 5)  # serial, refresh, retry, expire, negative-answer TTL


Lookup = Callable[[str, str | None], Awaitable[str | None]]
"""(environment name, region or None) -> its live address, or None."""


def store_lookup(store: Store) -> Lookup:
    async def lookup(name: str, region: str | None) -> str | None:
        query = select(EnvironmentRow.live_address, EnvironmentRow.region).where(
            EnvironmentRow.live_name == name, EnvironmentRow.state.in_(ANSWERING_STATES)
        )
        async with store.read() as session:
            row = (await session.execute(query)).first()
        if row is None or (region is not None and row.region != region):
            return None
        return str(row.live_address) if row.live_address else None

    return lookup


class ZoneServer:
    """One zone over UDP and TCP on `host:port` (port 0: a free one, kept across restarts)."""

    def __init__(
        self, zone: str, regions: set[str], lookup: Lookup, *, host: str, port: int, ttl: int
    ) -> None:
        self.zone = zone.strip(".").lower()
        self.regions = regions
        self.lookup = lookup
        self.host = host
        self.port = port
        self.ttl = ttl
        self.mode = DnsMode.CLOSED
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    def status(self) -> DnsStatus:
        return DnsStatus(zone=self.zone, mode=self.mode, address=self.address)

    @property
    def address(self) -> str | None:
        """`HOST:PORT` once bound (also while stopped: it is where the zone is served)."""
        return f"{self.host}:{self.port}" if self.port else None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve (bind first if closed; a black hole starts answering again)."""
        if self._udp is None:
            await self._bind()
        self.mode = DnsMode.SERVING

    async def stop(self, *, black_hole: bool = False) -> None:
        """Stop answering: close the sockets, or keep them open and answer nothing."""
        if black_hole:
            if self._udp is None:
                await self._bind()
            self.mode = DnsMode.BLACK_HOLE
            return
        await self.close()

    async def close(self) -> None:
        self.mode = DnsMode.CLOSED
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._connections):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if self.port == 0 else 1):
            tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
            port = int(tcp.sockets[0].getsockname()[1])
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(self.host, port)
                )
            except OSError as exc:  # the TCP port's UDP twin is taken: try another pair
                last = exc
                tcp.close()
                await tcp.wait_closed()
                continue
            self._tcp, self._udp, self.port = tcp, udp, port
            return
        assert last is not None
        raise last

    # -- transports ----------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        reply = await self.answer(data)
        if reply is not None and self._udp is not None and self.mode is DnsMode.SERVING:
            self._udp.sendto(reply, peer)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readexactly(2)
                (length,) = struct.unpack(">H", head)
                data = await reader.readexactly(length)
                if self.mode is not DnsMode.SERVING:
                    continue  # black-holed: read and say nothing
                reply = await self.answer(data)
                if reply is None:
                    break
                writer.write(struct.pack(">H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    # -- answers -------------------------------------------------------------------------------

    async def answer(self, data: bytes) -> bytes | None:
        """The wire reply to one query; None for a packet that is not a DNS query at all."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except (dnslib.DNSError, struct.error, IndexError, ValueError):
            return None
        reply = request.reply(ra=0, aa=1)
        if request.header.opcode != dnslib.OPCODE.QUERY or not request.questions:
            reply.header.aa = 0
            reply.header.rcode = dnslib.RCODE.NOTIMP
            return bytes(reply.pack())
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        if name != self.zone and not name.endswith("." + self.zone):
            reply.header.aa = 0
            reply.header.rcode = dnslib.RCODE.REFUSED
            return bytes(reply.pack())
        try:
            self._fill(reply, question, name, await self._resolve(name))
        except Exception:
            log.exception("DNS: answering %s failed", name)
            reply = request.reply(ra=0, aa=1)
            reply.header.rcode = dnslib.RCODE.SERVFAIL
        return bytes(reply.pack())

    async def _resolve(self, name: str) -> str | bool | None:
        """The address for `name`; True for a name that exists without an A record (the apex,
        its name server); None for no such name."""
        if name in (self.zone, f"ns.{self.zone}"):
            return True
        labels = name[: -len(self.zone) - 1].split(".")
        if len(labels) == 1:
            found = await self.lookup(labels[0], None)
            return True if found is None and labels[0] in self.regions else found
        if len(labels) == 2 and labels[1] in self.regions:
            return await self.lookup(labels[0], labels[1])
        return None

    def _fill(
        self, reply: dnslib.DNSRecord, question: dnslib.DNSQuestion, name: str, found: object
    ) -> None:
        qtype = question.qtype
        soa = dnslib.RR(
            self.zone,
            dnslib.QTYPE.SOA,
            rdata=dnslib.SOA(f"ns.{self.zone}", f"hostmaster.{self.zone}", _SOA_TIMES),
            ttl=self.ttl,
        )
        if found is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            reply.add_auth(soa)
        elif isinstance(found, str) and qtype in (dnslib.QTYPE.A, dnslib.QTYPE.ANY):
            reply.add_answer(
                dnslib.RR(question.qname, dnslib.QTYPE.A, rdata=dnslib.A(found), ttl=self.ttl)
            )
        elif name == self.zone and qtype == dnslib.QTYPE.SOA:
            reply.add_answer(soa)
        elif name == self.zone and qtype == dnslib.QTYPE.NS:
            ns = dnslib.NS(f"ns.{self.zone}")
            reply.add_answer(dnslib.RR(self.zone, dnslib.QTYPE.NS, rdata=ns, ttl=self.ttl))
        elif name == f"ns.{self.zone}" and qtype == dnslib.QTYPE.A and _is_ipv4(self.host):
            a = dnslib.A(self.host)
            reply.add_answer(dnslib.RR(question.qname, dnslib.QTYPE.A, rdata=a, ttl=self.ttl))
        else:  # the name exists, without a record of that type
            reply.add_auth(soa)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: ZoneServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.server.mode is DnsMode.SERVING:
            self.server._spawn(self.server._answer_datagram(data, addr))


def _is_ipv4(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


DNS: web.AppKey[ZoneServer] = web.AppKey("dns", ZoneServer)


async def dns_context(app: web.Application) -> AsyncIterator[None]:
    """The cleanup context that serves the zone while the fleet runs. A port that cannot be
    bound is logged, not fatal: the API and the address cache still find environments."""
    fleet = app[FLEET]
    settings = fleet.config.dns
    server = ZoneServer(
        fleet.config.zone,
        {r.name for r in fleet.config.regions},
        store_lookup(fleet.store),
        host=settings.listen_host,
        port=settings.port,
        ttl=settings.ttl,
    )
    app[DNS] = server
    if settings.enabled:
        try:
            await server.start()
            log.info("DNS: serving %s on %s (UDP and TCP)", server.zone, server.address)
        except OSError as exc:
            log.warning(
                "DNS: cannot listen on %s:%s (%s); the zone is not served",
                settings.listen_host,
                settings.port,
                exc,
            )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await server.close()
