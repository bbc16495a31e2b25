"""CPU-heavy work (parsing, sanitising) off the event loop, each task with a
time budget.

feedparser has quadratic corners (its author-address regex takes 12 s on a
40 KB name) and a process pool cannot cancel a task: a poll's deadline ends
the wait, not the work, and a worker stays busy. So each task runs under
SIGALRM in its worker: the regex engine and the interpreter check for signals,
and the task fails with a ParseError naming its budget. In a thread (no
signals there) the task runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from aggregator.exceptions import ParseError

PARSE_BUDGET = 60.0  # seconds one task may take; a 16 MB feed of 200,000 items takes ~25 s


def within(budget: float, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), stopped with ParseError after `budget` seconds (in the main
    thread of a process, where signals are delivered)."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise ParseError(f"parsing took longer than {budget:g}s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's alarm (a test runner's timeout) goes on
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


class ParserPool(ProcessPoolExecutor):
    """A process pool whose workers die with the process that made it.

    A worker blocks on a queue that other workers also hold open, so it
    outlives a parent killed by SIGKILL (or the OOM killer) and lives on
    under init. Each worker therefore watches a pipe whose only write end
    this process holds: when this process dies, however it dies, the
    kernel closes that end, the read returns EOF and the worker exits.
    """

    def __init__(self, workers: int) -> None:
        lifeline, self._lifeline = multiprocessing.Pipe(duplex=False)
        # forkserver: never fork a process that already runs threads.
        super().__init__(
            workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_exit_with_parent,
            initargs=(lifeline,),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:  # else the workers finish their tasks first; closing it would stop them
            self._lifeline.close()


def _exit_with_parent(lifeline: Connection) -> None:
    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()  # nothing is ever sent: this returns when the parent is gone
        os._exit(1)  # mid-task too: there is no one left to answer

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ParserPool(workers)


async def run_within(executor: Executor, budget: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in `executor` under a budget."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, partial(within, budget, fn, *args))
