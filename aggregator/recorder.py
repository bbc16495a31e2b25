"""Group commit: writes that are ready together share one transaction.

SQLite has one writer anyway; batching turns N commits and N thread hops into
one, which is most of the cost of a round of 304s (polls) or of a burst of
webhook deliveries. Each record's events and state are still written
together, so batching changes nothing about what a crash can lose. One bad
record never fails the others: a batch that raises over its data is retried
record by record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from sqlalchemy.exc import OperationalError

from aggregator.store import FailureRecord, PollRecord, Store

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")
Record = PollRecord | FailureRecord


class GroupCommit(Generic[R, T]):
    """Commits records through `write` (a batch in, one result per record
    out), batching those that arrive while a batch is being written. Runs
    `write` in `executor` (default: asyncio's threads)."""

    def __init__(
        self,
        write: Callable[[Sequence[R]], list[T]],
        *,
        max_batch: int = 200,
        executor: Executor | None = None,
        name: str = "recorder",
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._executor = executor
        self._name = name
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._task: asyncio.Task[None] | None = None

    async def record(self, record: R) -> T:
        """Commit `record` (with whatever else is waiting); its result."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        return await future

    async def _call(self, records: Sequence[R]) -> list[T]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._write, records
        )

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._call([r for r, _ in batch])
            except OperationalError as err:
                # The database itself failed (locked past busy_timeout, disk full):
                # record by record would only fail as many times more slowly.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            except Exception:
                await self._one_by_one(batch)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        for record, future in batch:
            try:
                [result] = await self._call([record])
            except Exception as err:
                if not future.done():
                    future.set_exception(err)
            else:
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        """Let the batch being written finish: it may hold polls' state."""
        if self._task is not None:
            await asyncio.shield(self._task)


class Recorder(GroupCommit[Record, list[int]]):
    """Polls' outcomes: each record's new event ids."""

    def __init__(self, store: Store, max_batch: int = 200) -> None:
        super().__init__(store.record, max_batch=max_batch)
