"""Threads off the event loop: one that runs to the end whatever its caller does, and one the
process does not wait for."""

from __future__ import annotations

import asyncio
import threading

import pytest

from leeward.common.threads import in_daemon_thread, to_thread_to_the_end
from tests.conftest import until


async def test_a_cancelled_start_waits_for_its_thread_before_letting_go():
    """What start() runs in a thread (filling the environment's directory, launching the agent)
    is finished before the cancellation reaches the caller, so the lock it releases cannot let
    a stop() remove the directory while the thread still writes into it."""
    began, finished = threading.Event(), threading.Event()

    def slow() -> None:
        began.set()
        finished.wait(0.3)  # the thread's work, long enough to be cancelled in the middle
        finished.set()

    task = asyncio.create_task(to_thread_to_the_end(slow))
    await until(began.is_set, "the thread began", timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set(), "the cancellation overtook the thread"


async def test_a_daemon_thread_hands_back_its_result_or_its_error_and_is_not_waited_for():
    release = threading.Event()
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 7

    assert await in_daemon_thread(work, "probe") == 7
    assert seen[0].daemon and seen[0].name == "probe"

    def fails() -> None:
        raise OSError("no route")

    with pytest.raises(OSError, match="no route"):
        await in_daemon_thread(fails)

    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    held = asyncio.create_task(in_daemon_thread(hold))
    await until(started.is_set, "the thread started", timeout=5)
    held.cancel()  # the caller goes on at once; the thread finishes alone
    with pytest.raises(asyncio.CancelledError):
        await held
    release.set()
