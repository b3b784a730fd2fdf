"""The race's two ways of asking, spoken over asyncio streams and datagrams (no aiohttp, no
dnslib: `leeward proxy` runs them at each SSH connection and must start fast): a GET of JSON
over HTTP/1.1 (a POST without a body, to start a stopped environment), and one DNS A query
over UDP."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
from typing import Any

DNS_TIMEOUT = 0.25
"""Seconds the DNS source gets (one query, no retry): what a DNS outage can cost at most."""


async def http_get_json(url: str, path: str, token: str | None, seconds: float) -> tuple[int, Any]:
    """GET `url + path` (HTTP/1.1, `Connection: close`): status and JSON body."""
    return await http_json("GET", url, path, token, seconds)


async def http_json(
    method: str, url: str, path: str, token: str | None, seconds: float
) -> tuple[int, Any]:
    """`method` (with no body) on `url + path` (HTTP/1.1, `Connection: close`): status and JSON
    body."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)

    async def go() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls or None)
        try:
            lines = [
                f"{method} {parts.path.rstrip('/')}{path} HTTP/1.1",
                f"Host: {parts.netloc}",
                "Accept: application/json",
                "Connection: close",
                "User-Agent: leeward-locate",
            ]
            if token:
                lines.append(f"Authorization: Bearer {token}")
            if method != "GET":
                lines.append("Content-Length: 0")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
        }
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _unchunk(body)
        return status, json.loads(body) if body else None

    async with asyncio.timeout(seconds):
        return await go()


def _unchunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _dns_query(name: str) -> tuple[int, bytes]:
    qid = secrets.randbelow(65536)
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)  # a question for the authority, no RD
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split("."))
    return qid, header + qname + b"\0" + struct.pack(">HH", 1, 1)  # A, IN


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def _dns_addresses(data: bytes, qid: int) -> list[str]:
    """The A records of a reply; [] for NXDOMAIN; ValueError for anything else wrong."""
    rid, flags, questions, answers, _, _ = struct.unpack_from(">HHHHHH", data)
    if rid != qid:
        raise ValueError("a reply to another query")
    rcode = flags & 0xF
    if rcode == 3:
        return []
    if rcode != 0:
        raise ValueError(f"DNS error code {rcode}")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(data, offset) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(data, offset)
        rtype, _, _, length = struct.unpack_from(">HHIH", data, offset)
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += length
    return found


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: nothing listens
        if not self.reply.done():
            self.reply.set_exception(exc)


async def dns_lookup(server: str, name: str, seconds: float = DNS_TIMEOUT) -> list[str]:
    """A records for `name` from `server` (`HOST:PORT`), one UDP query within `seconds`."""
    host, _, port = server.rpartition(":")
    loop = asyncio.get_running_loop()
    qid, query = _dns_query(name)
    transport, protocol = await loop.create_datagram_endpoint(
        _OneReply, remote_addr=(host.strip("[]"), int(port))
    )
    try:
        transport.sendto(query)
        async with asyncio.timeout(seconds):
            reply = await protocol.reply
        return _dns_addresses(reply, qid)
    finally:
        transport.close()
