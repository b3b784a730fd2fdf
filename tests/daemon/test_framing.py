"""The daemon's frame reader fuzzed (hypothesis): alone, on valid messages behind any junk cut
at any points; and in the real daemon, on junk and malformed messages, after each of which a
valid request must be answered. Short here (scripts/test); LEEWARD_FULL=1 (scripts/chaos) runs
many more examples."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leeward.daemon.framing import (
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    FrameReader,
    Message,
    Unreadable,
)
from tests.cli.sandbox import make_sandbox
from tests.daemon.kit import RawDaemon

FULL = bool(os.environ.get("LEEWARD_FULL"))

NASTY = [
    b"Content-Length: ",
    b"content-length:",
    b"Content-Length: 5\r\n\r\n",
    b"Content-Length: 0\r\n\r\n",
    b"Content-Length: 99999999999999\r\n\r\n",
    b"Content-Length: -1\r\n\r\n",
    "Content-Length: ²\r\n\r\n".encode(),
    b"Content-Type: x\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"{",
    b"}",
    b'"',
    b"[" * 50,
    b"\x00\xff",
    b"7",
    b"x" * (MAX_HEADER_BYTES + 1),
]
junk = st.lists(st.sampled_from(NASTY) | st.binary(max_size=40), max_size=6).map(b"".join)


def frame(payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """`stream` in pieces, cut at `cuts` (modulo its length), as reads might return it."""
    ends = [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    return [stream[start:end] for start, end in zip([0, *ends], ends, strict=False)]


def read_all(stream: bytes, cuts: list[int]) -> tuple[list[Any], FrameReader]:
    """The events of `stream` fed in pieces cut at `cuts`, then given up on as the daemon does
    when nothing more comes."""
    reader = FrameReader()
    events: list[Any] = []
    for piece in cut(stream, cuts):
        events += reader.feed(piece)
        assert reader.buffered <= MAX_HEADER_BYTES + MAX_MESSAGE_BYTES + len(stream)
    while reader.partial:
        events += reader.give_up()
    return events, reader


@settings(max_examples=3000 if FULL else 150, deadline=None)
@given(
    pieces=st.lists(st.tuples(junk, st.text(max_size=30)), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
)
@example(pieces=[(b"Content-Length: 2\r\nX", "a")], cuts=[])
@example(pieces=[(b"Content-Length: 999\r\n\r\n{", "a"), (b"", "b")], cuts=[3, 40])
@example(pieces=[(b"Content-Length:Content-Length: 7\r\n\r\n", "a")], cuts=[1])
def test_every_valid_message_behind_any_junk_is_read_once_in_order(
    pieces: list[tuple[bytes, str]], cuts: list[int]
) -> None:
    stream = b""
    sent = []
    for i, (noise, text) in enumerate(pieces):
        marker = {"jsonrpc": "2.0", "id": f"valid-{i}", "method": "m", "params": {"t": text}}
        sent.append(marker)
        stream += noise + frame(marker)
    events, _ = read_all(stream, cuts)
    got = [
        e.payload
        for e in events
        if isinstance(e, Message)
        and isinstance(e.payload, dict)
        and str(e.payload.get("id", "")).startswith("valid-")
    ]
    assert got == sent
    assert all(isinstance(e, Message | Unreadable) for e in events)


@settings(max_examples=1000 if FULL else 100, deadline=None)
@given(
    stream=st.lists(st.sampled_from(NASTY) | st.binary(max_size=60), max_size=10).map(b"".join),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
)
def test_the_events_are_the_same_however_the_bytes_are_cut(stream: bytes, cuts: list[int]) -> None:
    whole = FrameReader().feed(stream)
    reader = FrameReader()
    assert [e for piece in cut(stream, cuts) for e in reader.feed(piece)] == whole


def test_an_oversized_frame_is_skipped_without_being_held() -> None:
    reader = FrameReader()
    events = reader.feed(b"Content-Length: %d\r\n\r\n" % (MAX_MESSAGE_BYTES + 1))
    assert [type(e) for e in events] == [Unreadable]
    for _ in range(300):  # 19 MiB in 64 KiB reads
        assert reader.feed(b"a" * (64 << 10)) == []
        assert reader.buffered < 64
    assert reader.feed(frame({"ok": 1})) == [Message({"ok": 1})]


# -- the real daemon --------------------------------------------------------------------------

ids = st.one_of(
    st.integers(-(2**31), 2**31),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.just([1]),
    st.just({"a": 1}),
)
params = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.sampled_from(["environment", "hours", "request", "fleetUrl", "token", "textDocument"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=8), st.just({"kind": "devserver"})),
        max_size=3,
    ),
)
methods = st.sampled_from(
    [
        "leeward/status/get",
        "leeward/catalog/get",
        "leeward/environments/list",
        "leeward/environments/delete",
        "leeward/environments/extend",
        "leeward/environments/create",
        "leeward/health/list",
        "leeward/account/signIn",
        "leeward/nope",
        "textDocument/hover",
        "textDocument/didOpen",
        "workspace/executeCommand",
        "initialize",
        "initialized",
        "$/cancelRequest",
        "$/setTrace",
    ]
)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2])},
    optional={"id": ids, "method": methods | st.integers(), "params": params},
)
STALL_PADDING = b" " * 1100
"""After each example's request: completes a body of up to 1000 bytes the junk declared, so that
the request is found without waiting FRAME_STALL_SECONDS (junk with a longer one still passes,
slowly)."""


@pytest.mark.slow
def test_the_real_daemon_answers_after_any_junk_and_any_message(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        daemon = loop.run_until_complete(RawDaemon.start(make_sandbox(tmp_path)))

        async def one(noise: bytes, message: dict[str, Any]) -> None:
            await daemon.write(noise + daemon.frame(message))
            msg_id = daemon.new_id()
            request = {"jsonrpc": "2.0", "id": msg_id, "method": "leeward/status/get"}
            await daemon.write(daemon.frame(request) + STALL_PADDING)
            answer = await daemon.answer_to(msg_id, timeout=15)
            assert answer.get("result", {}).get("version"), answer
            daemon.seen.clear()

        @settings(
            max_examples=1500 if FULL else 40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(noise=junk, message=messages)
        def survives(noise: bytes, message: dict[str, Any]) -> None:
            loop.run_until_complete(one(noise, message))

        survives()
        assert loop.run_until_complete(daemon.stop()) == 0
    finally:
        loop.close()
