"""The fleet's DNS server: A records for `NAME.REGION.ZONE` and `NAME.ZONE` over UDP and TCP,
straight from the store, and stopped (closed or black-holed) and started for exercises."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

import dnslib
import pytest

from tests.conftest import Api, small_config

ZONE = "leeward.test"


def ask(address: str, name: str, qtype: str = "A", *, tcp: bool = False, timeout: float = 2.0):
    """(rcode name, [A addresses], flags) for one query; raises TimeoutError/OSError."""
    host, port = address.rsplit(":", 1)
    query = dnslib.DNSRecord.question(name, qtype)
    raw = query.send(host, int(port), tcp=tcp, timeout=timeout)
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.id == query.header.id
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A]
    return dnslib.RCODE.get(reply.header.rcode), addresses, reply


async def ask_async(address: str, name: str, qtype: str = "A", **kwargs: Any):
    return await asyncio.to_thread(ask, address, name, qtype, **kwargs)


async def dns_address(admin: Api) -> str:
    status, body = await admin.call("GET", "/v1/admin/dns")
    assert status == 200, body
    assert body["zone"] == ZONE
    return str(body["address"])


async def test_names_resolve_over_udp_and_tcp_from_create_to_delete(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    config = small_config(tmp_path, sqlite_url)
    async with start_fleet(config) as f:
        address = await dns_address(f.admin)
        _, catalog = await f.api.call("GET", "/v1/catalog")
        assert catalog["dns"] == address

        status, env = await f.api.call(
            "POST", "/v1/environments", {"kind": "devserver", "flavor": "tiny", "name": "box"}
        )
        assert status in (201, 202), env
        region = env["region"]
        other = next(r.name for r in config.regions if r.name != region)
        # At once, while it is still being made: the name has its address from the start.
        for name in (f"box.{ZONE}", f"box.{region}.{ZONE}", f"BoX.{region.upper()}.{ZONE}."):
            for tcp in (False, True):
                rcode, addresses, reply = await ask_async(address, name, tcp=tcp)
                assert (rcode, addresses) == ("NOERROR", [env["address"]]), (name, tcp)
                assert reply.header.aa == 1
                assert reply.rr[0].ttl == config.dns.ttl
        assert (await ask_async(address, f"box.{other}.{ZONE}"))[0] == "NXDOMAIN"
        assert (await ask_async(address, f"nobody.{ZONE}"))[0] == "NXDOMAIN"
        assert (await ask_async(address, f"a.b.box.{region}.{ZONE}"))[0] == "NXDOMAIN"
        rcode, addresses, reply = await ask_async(address, f"box.{ZONE}", "AAAA")
        assert (rcode, addresses, len(reply.auth)) == ("NOERROR", [], 1)  # exists, no AAAA
        assert (await ask_async(address, "example.com"))[0] == "REFUSED"
        assert (await ask_async(address, f"x.not{ZONE}", tcp=True))[0] == "REFUSED"
        rcode, _, reply = await ask_async(address, ZONE, "SOA")
        assert rcode == "NOERROR" and reply.rr[0].rtype == dnslib.QTYPE.SOA

        await f.api.wait_state(env["id"], {"running"})
        status, _ = await f.api.call("DELETE", "/v1/environments/box")
        assert status == 202
        for tcp in (False, True):
            rcode, addresses, _ = await ask_async(address, f"box.{region}.{ZONE}", tcp=tcp)
            assert (rcode, addresses) == ("NXDOMAIN", [])


async def test_garbage_gets_no_answer_and_the_server_goes_on(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    async with start_fleet(small_config(tmp_path, sqlite_url)) as f:
        address = await dns_address(f.admin)
        host, port = address.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01garbage", (host, int(port)))
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(struct.pack(">H", 3) + b"bad")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no reply
        writer.close()
        assert (await ask_async(address, "example.com"))[0] == "REFUSED"


async def test_stop_closed_black_hole_and_start_again(
    start_fleet, tmp_path: Path, sqlite_url: str
) -> None:
    async with start_fleet(small_config(tmp_path, sqlite_url)) as f:
        address = await dns_address(f.admin)
        host, port = address.rsplit(":", 1)
        status, body = await f.api.call("POST", "/v1/admin/dns/stop")
        assert status == 403, body  # admins only

        status, body = await f.admin.call("POST", "/v1/admin/dns/stop")
        assert (status, body["mode"], body["address"]) == (200, "closed", address)
        with pytest.raises(ConnectionRefusedError):  # nothing listens on TCP
            await asyncio.open_connection(host, int(port))
        with pytest.raises((TimeoutError, ConnectionRefusedError)):  # UDP: no answer
            await ask_async(address, "example.com", timeout=0.3)

        status, body = await f.admin.call("POST", "/v1/admin/dns/stop", {"blackHole": True})
        assert (status, body["mode"]) == (200, "black-hole")
        with pytest.raises(TimeoutError):
            await ask_async(address, "example.com", timeout=0.3)
        with pytest.raises(TimeoutError):  # TCP connects, and nothing answers
            await ask_async(address, "example.com", tcp=True, timeout=0.3)

        status, body = await f.admin.call("POST", "/v1/admin/dns/start")
        assert (status, body["mode"], body["address"]) == (200, "serving", address)
        assert (await ask_async(address, "example.com"))[0] == "REFUSED"
        # Closed, then started again: the same port.
        await f.admin.call("POST", "/v1/admin/dns/stop", {"blackHole": False})
        status, body = await f.admin.call("POST", "/v1/admin/dns/start")
        assert (status, body["address"]) == (200, address)
        assert (await ask_async(address, "example.com", tcp=True))[0] == "REFUSED"
        _, health = await f.admin.call("GET", "/v1/admin/dns")
        assert health["mode"] == "serving"
