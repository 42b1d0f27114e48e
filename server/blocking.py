"""Blocking calls (database queries, large-body parsing) off the server's event loop.

:func:`run_blocking` runs a function in this process's thread pool (:data:`THREADS` threads,
the bound Starlette's ``run_in_threadpool`` has) through ``loop.run_in_executor``, which costs
about half the CPU of anyio's thread hop (``bench/bench_server.py`` profiles: two hops a request
were ~14% of the server's CPU). :func:`finish` awaits a ``concurrent.futures.Future`` (a group
commit's, say) without any thread. Both keep anyio's semantics on cancellation: a call that has
started runs to its end (a batch being stored is stored), and only then does the cancellation go
on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

THREADS = 40
"""Threads running blocking calls in one server process."""

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    """This process's thread pool (created on first use)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(THREADS, thread_name_prefix="pocketrec-blocking")
        return _executor


async def finish(future: Future[T]) -> T:
    """The result of ``future``; if the awaiting task is cancelled meanwhile, wait for the
    future to be done (or cancelled before it started) first, then let the cancellation go on."""
    waiter = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        if not future.cancel():  # already running: it finishes, whatever it does
            with contextlib.suppress(BaseException):
                await waiter
        raise


async def run_blocking(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in :func:`executor`'s threads (module docstring)."""
    return await finish(executor().submit(function, *args))


__all__ = ["THREADS", "executor", "finish", "run_blocking"]
