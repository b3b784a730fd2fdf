"""The client's bytes cut into JSON-RPC messages (LSP framing: `Content-Length` and other headers,
a blank line, the body), with every size bounded, and a frame that cannot be read named as such
instead of being waited on forever.

pygls's own reader trusts the header: a `Content-Length` of a terabyte is a terabyte to read
(MemoryError), a header line is read however long it is, and a frame it cannot match leaves it
waiting for one it can. This reader holds at most MAX_HEADER_BYTES of headers and
MAX_MESSAGE_BYTES of body; each frame it cannot read is one `Unreadable`, after which it looks
for the next `Content-Length:` header and goes on from there. That resynchronisation is safe
because no valid JSON body holds a header: JSON strings escape CR and LF, and a header name
cannot stand outside a string. For the same reason the search also goes through a body that is
not JSON (a body shorter than declared swallowed the start of the next message) and a frame that
stops arriving (`give_up`, which the caller calls after FRAME_STALL_SECONDS of silence).

Sans I/O: bytes in, messages and complaints out; the server does the reading and the answering.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

MAX_MESSAGE_BYTES = 16 << 20
"""The largest body the daemon reads (16 MiB). Its requests are a few hundred bytes; the largest
thing a client might send is an LSP document, and no document of a Leeward workspace is near
this. A larger declared length is refused at once: its bytes are skipped, never buffered."""

MAX_HEADER_BYTES = 8 << 10
"""The largest header section, blank line included (8 KiB). LSP has two headers of a few dozen
bytes; more than this without a blank line is not a header."""

FRAME_STALL_SECONDS = 2.0
"""A frame begun and then silent this long is given up. A client writes each message in one go
(vscode-jsonrpc writes the header and the body back to back), so a frame that stops midway is
broken (a body shorter than its `Content-Length`), not slow; giving it up answers it and lets
the messages behind it through."""

_HEADER_START = re.compile(rb"content-length:", re.IGNORECASE)
_KEEP_WHILE_SEARCHING = len(b"content-length:") - 1
"""While looking for a header, the bytes kept in case one is split between two reads."""
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A header name (HTTP's token)."""
_VALUE = re.compile(rb"[\t\x20-\x7e]*")
"""A header value: printable ASCII."""
_DIGITS = re.compile(rb"[0-9]+")
"""A length: ASCII digits only (`str.isdigit` would take '²')."""
_MAX_DIGITS = 18
"""Longer lengths are over MAX_MESSAGE_BYTES whatever the digits; not worth an int()."""
_SHOWN = 40
"""Bytes of a bad header quoted in the complaint."""


@dataclass(frozen=True)
class Message:
    """A frame whose body is JSON (any JSON: whether it is a JSON-RPC message is the server's
    concern)."""

    payload: Any


@dataclass(frozen=True)
class Unreadable:
    """A frame that could not be read: bad framing, or a body that is not JSON. JSON-RPC answers
    it with a parse error (id null)."""

    reason: str


Event = Message | Unreadable


class _State(Enum):
    HEADERS = auto()
    BODY = auto()
    SEARCHING = auto()
    """Looking for the next `Content-Length:` after an unreadable frame."""


def _shown(data: bytes) -> str:
    text = repr(data[:_SHOWN])
    return text + ("..." if len(data) > _SHOWN else "")


class _BadHeader(Exception):
    pass


def content_length(section: bytes) -> int:
    """The body's length from a header section (its lines, without the blank line). Header names
    are case-insensitive; headers other than `Content-Length` are allowed and ignored."""
    length: int | None = None
    for line in section.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise _BadHeader(f"a header line is not `Name: value`: {_shown(line)}")
        if name.lower() != b"content-length":
            continue
        digits = value.strip(b" \t")
        if not _DIGITS.fullmatch(digits):
            raise _BadHeader(f"Content-Length is not a number of bytes: {_shown(digits)}")
        if length is not None:
            raise _BadHeader("more than one Content-Length header")
        length = int(digits) if len(digits) <= _MAX_DIGITS else MAX_MESSAGE_BYTES + 1
    if length is None:
        raise _BadHeader("no Content-Length header")
    return length


def decode(body: bytes) -> Any:
    """The body's JSON (UTF-8, as LSP says); ValueError when it is not."""
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


class FrameReader:
    """Feed it the client's bytes as they come; it returns the messages and complaints they
    complete, in order, the same however the bytes were cut.

    A frame that fails is searched again from its second byte (its headers too: a header
    section can hold the next message's header on a line of its own, a body its start), so a
    valid message behind any junk is found; each failure drops at least one byte, each success
    takes its frame, so it always moves on."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _State.HEADERS
        self._header = b""
        """The headers of the frame whose body is awaited, blank line included."""
        self._length = 0

    @property
    def partial(self) -> bool:
        """Part of a frame has arrived and waits for the rest."""
        return self._state is _State.BODY or (self._state is _State.HEADERS and bool(self._buffer))

    @property
    def buffered(self) -> int:
        """Bytes held: at most MAX_HEADER_BYTES + MAX_MESSAGE_BYTES and the last read."""
        return len(self._buffer) + len(self._header)

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        return self._run([])

    def give_up(self) -> list[Event]:
        """The frame in progress stopped arriving: say so, and look for a message in what came."""
        events: list[Event] = []
        if self._state is _State.BODY:
            events.append(
                Unreadable(
                    f"the body stopped after {len(self._buffer)} of the {self._length} bytes "
                    "its Content-Length declared"
                )
            )
            self._search_frame_again()
        elif self._state is _State.HEADERS and self._buffer:
            shown = _shown(bytes(self._buffer))
            events.append(Unreadable(f"the headers stopped before their blank line: {shown}"))
            self._search_frame_again()
        return self._run(events)

    def _run(self, events: list[Event]) -> list[Event]:
        while self._step(events):
            pass
        return events

    def _search_frame_again(self) -> None:
        """The frame that starts the buffer (after its awaited headers, if any) failed."""
        self._buffer[:0] = self._header
        self._header = b""
        del self._buffer[:1]
        self._state = _State.SEARCHING

    def _step(self, events: list[Event]) -> bool:
        """One step on the buffer; False when it needs more bytes."""
        buffer = self._buffer
        if self._state is _State.SEARCHING:
            found = _HEADER_START.search(buffer)
            if found is None:
                del buffer[: max(0, len(buffer) - _KEEP_WHILE_SEARCHING)]
                return False
            del buffer[: found.start()]
            self._state = _State.HEADERS
            return True
        if self._state is _State.HEADERS:
            end = buffer.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
            if end < 0:
                if len(buffer) < MAX_HEADER_BYTES:
                    return False
                events.append(Unreadable(f"no end of headers in {MAX_HEADER_BYTES} bytes"))
                self._search_frame_again()
                return True
            try:
                length = content_length(bytes(buffer[:end]))
            except _BadHeader as exc:
                events.append(Unreadable(str(exc)))
                self._search_frame_again()
                return True
            if length > MAX_MESSAGE_BYTES:
                # Skipped by looking for the next header, not by counting the declared bytes:
                # a length that lies would swallow everything after it.
                events.append(
                    Unreadable(
                        f"a Content-Length of {length} bytes is over the limit of "
                        f"{MAX_MESSAGE_BYTES}"
                    )
                )
                self._search_frame_again()
                return True
            self._header = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            self._state, self._length = _State.BODY, length
            return True
        if len(buffer) < self._length:
            return False
        body = bytes(buffer[: self._length])
        try:
            payload = decode(body)
        except ValueError as exc:
            # Its length may be wrong: a body shorter than declared took in the next message.
            events.append(Unreadable(f"the body is not JSON ({exc})"))
            self._search_frame_again()
            return True
        del buffer[: self._length]
        self._state, self._header = _State.HEADERS, b""
        events.append(Message(payload))
        return True
