"""Hostile input on the real daemon's pipes (issue 11): a terabyte `Content-Length`, each kind of
broken frame, each malformed request. The daemon stays bounded in memory, answers a frame it
cannot read with a parse error (id null), every request with an answer, no notification, and
reads the next valid message: each case ends with a request that must be answered."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from leeward.daemon.framing import FRAME_STALL_SECONDS, MAX_MESSAGE_BYTES
from tests.cli.sandbox import make_sandbox
from tests.daemon.kit import RawDaemon

pytestmark = pytest.mark.asyncio(loop_scope="module")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RawDaemon]:
    """One daemon for the module: every case must leave it able to serve the next."""
    d = await RawDaemon.start(make_sandbox(tmp_path_factory.mktemp("hostile")))
    yield d
    assert d.process.returncode is None, "the daemon died"
    assert await d.stop() == 0


async def fresh_daemon(tmp_path: Path) -> RawDaemon:
    return await RawDaemon.start(make_sandbox(tmp_path))


def status_request(msg_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "leeward/status/get", "params": {}}


async def recovers_after(d: RawDaemon, junk: bytes) -> list[dict[str, Any]]:
    """Write `junk` and, right behind it, a valid request: that request is answered (the daemon
    found its header), and so is one more. The parse errors it sent for the junk."""
    d.take_orphan_errors()
    msg_id = d.new_id()
    await d.write(junk + d.frame(status_request(msg_id)))
    answer = await d.answer_to(msg_id)
    assert answer.get("result", {}).get("version"), answer
    await d.answers_status()
    errors = d.take_orphan_errors()
    assert errors and {e["code"] for e in errors} == {PARSE_ERROR}, errors
    assert all(e["message"].startswith("Unreadable message: ") for e in errors), errors
    return errors


async def test_a_terabyte_content_length_is_refused_without_allocating_it(tmp_path: Path) -> None:
    d = await fresh_daemon(tmp_path)
    try:
        errors = await recovers_after(d, b"Content-Length: 1099511627776\r\n\r\n" + b"x" * 4096)
        assert "Content-Length of 1099511627776 bytes is over the limit" in errors[0]["message"]
        # An honest message over the limit: its bytes are skipped, not buffered.
        pad = "a" * (MAX_MESSAGE_BYTES + 1)
        big = d.frame({"jsonrpc": "2.0", "method": "leeward/nothing", "params": {"pad": pad}})
        errors = await recovers_after(d, big)
        assert len(errors) == 1 and f"over the limit of {MAX_MESSAGE_BYTES}" in errors[0]["message"]
        assert d.peak_memory_bytes() < 250 << 20, "the daemon buffered what it should skip"
        assert any("over the limit" in line for line in d.logs()), "the log says why"
    finally:
        assert await d.stop() == 0


FRAMING_ERRORS = {
    "Content-Length 0 with a body": (
        b'Content-Length: 0\r\n\r\n{"jsonrpc": "2.0", "method": "initialized"}',
        ["the body is not JSON"],
    ),
    "body longer than declared": (
        b'Content-Length: 5\r\n\r\n{"jsonrpc": "2.0", "method": "initialized"}',
        ["the body is not JSON"],
    ),
    "body shorter than declared, the next message behind it": (
        b'Content-Length: 60\r\n\r\n{"jsonrpc":',
        ["the body is not JSON"],
    ),
    "a megabyte without a header end": (b"x" * (1 << 20), ["no end of headers in 8192 bytes"]),
    "a megabyte of header lines": (
        b"X-Junk: yes\r\n" * 80_000,
        ["no end of headers in 8192 bytes"],
    ),
    "non-numeric Content-Length": (
        b"Content-Length: abc\r\n\r\n{}",
        ["Content-Length is not a number of bytes: b'abc'"],
    ),
    "negative Content-Length": (
        b"Content-Length: -5\r\n\r\n{}",
        ["Content-Length is not a number of bytes: b'-5'"],
    ),
    "a plus sign": (b"Content-Length: +5\r\n\r\n", ["not a number of bytes: b'+5'"]),
    "a fraction": (b"Content-Length: 5.0\r\n\r\n", ["not a number of bytes: b'5.0'"]),
    "an empty length": (b"Content-Length:\r\n\r\n", ["not a number of bytes: b''"]),
    "a superscript two (str.isdigit says yes)": (
        "Content-Length: ²\r\n\r\n".encode(),
        ["a header line is not `Name: value`"],
    ),
    "arabic-indic digits": (
        "Content-Length: ٥\r\n\r\n".encode(),
        ["a header line is not `Name: value`"],
    ),
    "two Content-Lengths": (
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ["more than one Content-Length header", "the body is not JSON (Extra data"],
    ),
    "no Content-Length": (
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}",
        ["no Content-Length header"],
    ),
    "binary junk before a header": (b"\x00\xff\xfe\x01garbage\r\n", ["a header line is not"]),
    "a header line without a colon": (
        b"Content-Length 2\r\n\r\n{}",
        ["a header line is not `Name: value`: b'Content-Length 2'"],
    ),
    "junk headers around a good one": (
        b"Junk\r\nContent-Length: 2\r\n\x7fX: 1\r\n\r\n{}",
        ["a header line is not `Name: value`: b'Junk'", "a header line is not"],
    ),
    "a body that is not JSON": (b"Content-Length: 7\r\n\r\n{nope!}", ["the body is not JSON"]),
    "a body that is not UTF-8": (b'Content-Length: 4\r\n\r\n"\xff\xfe"', ["the body is not JSON"]),
    "JSON nested too deeply": (
        b"Content-Length: 200000\r\n\r\n" + b"[" * 200_000,
        ["the body is not JSON (nested too deeply)"],
    ),
}


@pytest.mark.parametrize("case", FRAMING_ERRORS)
async def test_a_framing_error_is_answered_and_the_next_message_is_read(
    daemon: RawDaemon, case: str
) -> None:
    junk, reasons = FRAMING_ERRORS[case]
    errors = await recovers_after(daemon, junk)
    assert len(errors) == len(reasons), errors
    for error, reason in zip(errors, reasons, strict=True):
        assert reason in error["message"], (reason, error)


async def test_a_body_that_stops_short_is_given_up_after_a_pause(daemon: RawDaemon) -> None:
    """Declared 1000 bytes, sent 11 and a whole request: nothing more comes. After
    FRAME_STALL_SECONDS the daemon gives the frame up, and finds the request inside it."""
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    errors = await recovers_after(daemon, b'Content-Length: 1000\r\n\r\n{"jsonrpc":')
    assert loop_time() - started >= FRAME_STALL_SECONDS
    assert len(errors) == 1, errors
    assert re.fullmatch(
        r"Unreadable message: the body stopped after \d+ of the 1000 bytes its Content-Length "
        r"declared\.",
        errors[0]["message"],
    ), errors


async def test_well_formed_headers_of_other_kinds_are_read(daemon: RawDaemon) -> None:
    """Header names in any case, other headers, spaces around the length: all LSP allows."""
    for header in (
        b"content-length: %d\r\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nCONTENT-LENGTH:%d \r\n",
        b"X-Trace: 1\r\nContent-Length: \t%d\r\n",
    ):
        msg_id = daemon.new_id()
        body = json.dumps(status_request(msg_id)).encode()
        await daemon.write(header % len(body) + b"\r\n" + body)
        assert "result" in await daemon.answer_to(msg_id)
    assert daemon.take_orphan_errors() == []


# (what is sent, the id to answer or None for null, the error code or None for no answer)
MALFORMED: dict[str, tuple[Any, int | str | None, int | None]] = {
    "a batch": ([status_request(1)], None, INVALID_REQUEST),
    "a number": (42, None, INVALID_REQUEST),
    "a string": ("leeward/status/get", None, INVALID_REQUEST),
    "null": (None, None, INVALID_REQUEST),
    "an empty object": ({}, None, INVALID_REQUEST),
    "JSON-RPC 1.0": ({"jsonrpc": "1.0", "id": 11, "method": "leeward/status/get"}, 11, -32600),
    "no jsonrpc": ({"id": 12, "method": "leeward/status/get"}, 12, INVALID_REQUEST),
    "an object id": ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}, None, INVALID_REQUEST),
    "a boolean id": ({"jsonrpc": "2.0", "id": True, "method": "x"}, None, INVALID_REQUEST),
    "a fractional id": ({"jsonrpc": "2.0", "id": 1.5, "method": "x"}, None, INVALID_REQUEST),
    "a null id": ({"jsonrpc": "2.0", "id": None, "method": "x"}, None, INVALID_REQUEST),
    "a method that is a number": ({"jsonrpc": "2.0", "id": 13, "method": 7}, 13, -32600),
    "params that are a string": (
        {"jsonrpc": "2.0", "id": "s-14", "method": "leeward/status/get", "params": "x"},
        "s-14",
        INVALID_REQUEST,
    ),
    "neither request nor response": ({"jsonrpc": "2.0", "id": 15}, 15, INVALID_REQUEST),
    "hover, not served": (
        {
            "jsonrpc": "2.0",
            "id": 16,
            "method": "textDocument/hover",
            "params": {
                "textDocument": {"uri": "file:///x"},
                "position": {"line": 0, "character": 0},
            },
        },
        16,
        METHOD_NOT_FOUND,
    ),
    "hover without its params": (
        {"jsonrpc": "2.0", "id": 17, "method": "textDocument/hover", "params": {}},
        17,
        INVALID_PARAMS,
    ),
    "an unknown command": (
        {
            "jsonrpc": "2.0",
            "id": 18,
            "method": "workspace/executeCommand",
            "params": {"command": "rm"},
        },
        18,
        None,  # any error code: the point is that there is an answer
    ),
    "an unknown leeward method": (
        {"jsonrpc": "2.0", "id": 19, "method": "leeward/nope"},
        19,
        -32601,
    ),
    "a second initialize, badly typed": (
        {"jsonrpc": "2.0", "id": 20, "method": "initialize", "params": {"processId": "me"}},
        20,
        INVALID_PARAMS,
    ),
    "a second initialize": (
        {"jsonrpc": "2.0", "id": 21, "method": "initialize", "params": {"capabilities": {}}},
        21,
        INVALID_REQUEST,
    ),
    "leeward params of the wrong type": (
        {
            "jsonrpc": "2.0",
            "id": 22,
            "method": "leeward/environments/delete",
            "params": {"environment": 5},
        },
        22,
        INVALID_PARAMS,
    ),
    "leeward params that are an array": (
        {"jsonrpc": "2.0", "id": 23, "method": "leeward/health/list", "params": [1, 2]},
        23,
        INVALID_PARAMS,
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_every_malformed_request_is_answered(daemon: RawDaemon, case: str) -> None:
    payload, reply_to, code = MALFORMED[case]
    daemon.take_orphan_errors()
    await daemon.send(payload)
    if reply_to is None:
        await daemon.answers_status()
        errors = daemon.take_orphan_errors()
        assert [e["code"] for e in errors] == [code], errors
    else:
        answer = await daemon.answer_to(reply_to)
        assert "error" in answer and "result" not in answer, answer
        assert code is None or answer["error"]["code"] == code, answer
        assert answer["error"]["message"], answer
        await daemon.answers_status()
        assert daemon.take_orphan_errors() == []


async def test_the_error_names_the_field(daemon: RawDaemon) -> None:
    answer = await daemon.request("textDocument/hover", {"position": {"line": 0, "character": 0}})
    assert answer["error"] == {
        "code": INVALID_PARAMS,
        "message": "params.textDocument: required field missing.",
    }


NOTIFICATIONS = {
    "unknown method": {"jsonrpc": "2.0", "method": "leeward/nope"},
    "params of the wrong shape": {
        "jsonrpc": "2.0",
        "method": "textDocument/didOpen",
        "params": {"textDocument": 5},
    },
    "params that are a string": {"jsonrpc": "2.0", "method": "initialized", "params": "x"},
    "JSON-RPC 1.0": {"jsonrpc": "1.0", "method": "initialized"},
    "a method that is a number": {"jsonrpc": "2.0", "method": 5},
    "a request method as a notification": {"jsonrpc": "2.0", "method": "leeward/status/get"},
    "a cancel of nothing": {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 9}},
    "a cancel without an id": {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {}},
}


@pytest.mark.parametrize("case", NOTIFICATIONS)
async def test_a_bad_notification_gets_no_answer(daemon: RawDaemon, case: str) -> None:
    daemon.take_orphan_errors()
    before = len(daemon.seen)
    await daemon.send(NOTIFICATIONS[case])
    await daemon.answers_status()
    answers = [m for m in daemon.seen[before:] if "result" in m or "error" in m]
    assert answers == []


async def test_requests_after_shutdown_are_refused_and_exit_exits(tmp_path: Path) -> None:
    d = await fresh_daemon(tmp_path)
    assert "result" in await d.request("shutdown")
    late = await d.request("leeward/status/get", {})
    assert late["error"]["code"] == INVALID_REQUEST and "shutting down" in late["error"]["message"]
    await d.send({"jsonrpc": "2.0", "method": "exit"})
    assert await d.stop() == 0


async def test_exit_without_shutdown_exits_with_1(tmp_path: Path) -> None:
    d = await fresh_daemon(tmp_path)
    await d.send({"jsonrpc": "2.0", "method": "exit"})
    assert await d.stop() == 1


async def test_the_end_of_the_stream_ends_the_daemon(tmp_path: Path) -> None:
    d = await fresh_daemon(tmp_path)
    await d.write(b"Content-Length: 50\r\n\r\n{")  # and then the client goes away
    assert d.process.stdin is not None
    d.process.stdin.close()
    assert await d.stop() == 0


async def test_an_answered_error_leaves_no_traceback_in_the_log(tmp_path: Path) -> None:
    """Invalid params and the daemon's refusals are answers, not crashes: pygls's traceback for
    each (shown by VS Code in the Output panel, every line an error) is dropped."""
    sandbox = make_sandbox(tmp_path)
    daemon = await RawDaemon.start(sandbox)
    try:
        bad = await daemon.request("leeward/environments/extend", {"environment": "x", "hours": 0})
        assert bad["error"]["code"] == INVALID_PARAMS, bad
        hover = await daemon.request("textDocument/hover", {"position": {}})
        assert hover["error"]["code"] == INVALID_PARAMS, hover
        status = await daemon.request("leeward/status/get", {})
        assert "result" in status, status
    finally:
        assert await daemon.stop() == 0
    log = (sandbox.root / "daemon.stderr").read_text()
    assert "Traceback" not in log, log
