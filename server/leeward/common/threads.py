"""Blocking work off the event loop, in the two ways Leeward needs: a thread that runs to the end
whatever its caller does (`to_thread_to_the_end`), and one the process does not wait for at exit
(`in_daemon_thread`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")


async def to_thread_to_the_end(
    func: Callable[..., T], *args: object, executor: Executor | None = None
) -> T:
    """`asyncio.to_thread(func, *args)`, except that a cancellation waits for the thread to be
    done before it goes on: a thread cannot be stopped, and one still writing files (a home, a
    record, an environment's directory) must not overlap whatever the caller does next. In
    `executor`'s threads if given (an owner's, in a sandboxed environment)."""
    work = asyncio.ensure_future(in_thread(func, *args, executor=executor))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


async def in_thread(func: Callable[..., T], *args: object, executor: Executor | None = None) -> T:
    """`asyncio.to_thread(func, *args)` in `executor` (None: the loop's default executor)."""
    if executor is None:
        return await asyncio.to_thread(func, *args)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(func, *args))


async def in_daemon_thread(work: Callable[[], T], name: str = "worker") -> T:
    """`work()` in a thread of its own that the process does not wait for at exit: a request
    the other end holds (a long poll) must not delay a stop, as the default executor's threads
    would (they are joined when the loop closes). A cancellation leaves the thread to finish
    alone; its result is dropped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return  # cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
