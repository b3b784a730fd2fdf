"""The relay's wire format: a type byte, a 32-bit big-endian length, then the payload."""

from __future__ import annotations

import asyncio
import enum
import json
import struct

HEADER = struct.Struct(">BI")
SEQ = struct.Struct(">Q")
MAX_PAYLOAD = 1 << 20
CHUNK = 64 * 1024
"""The most stream bytes in one DATA frame."""


class Kind(enum.IntEnum):
    HELLO = 1
    SERVER_HELLO = 2
    NEW = 3
    RESUME = 4
    WELCOME = 5
    REFUSED = 6
    DATA = 16
    ACK = 17
    END = 18
    PING = 19
    PONG = 20


class ProtocolError(Exception):
    """The peer broke the protocol; the link is dropped (the session may resume)."""


def frame(kind: Kind, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def json_frame(kind: Kind, body: dict[str, object]) -> bytes:
    return frame(kind, json.dumps(body, separators=(",", ":")).encode())


def data_frame(seq: int, data: bytes) -> bytes:
    return HEADER.pack(Kind.DATA, SEQ.size + len(data)) + SEQ.pack(seq) + data


def offset_frame(kind: Kind, offset: int) -> bytes:
    return frame(kind, SEQ.pack(offset))


async def read_frame(reader: asyncio.StreamReader) -> tuple[Kind, bytes]:
    """The next frame; IncompleteReadError when the link ends, ProtocolError on garbage."""
    kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame of {length} bytes is over the limit")
    try:
        known = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame type {kind}") from None
    return known, await reader.readexactly(length)


def offset_of(payload: bytes) -> int:
    if len(payload) != SEQ.size:
        raise ProtocolError("bad offset frame")
    return int(SEQ.unpack(payload)[0])


def json_of(payload: bytes) -> dict[str, object]:
    try:
        body = json.loads(payload)
    except ValueError:
        raise ProtocolError("handshake message is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("handshake message is not a JSON object")
    return body
