"""Group commit: polls that finish together share one transaction.

SQLite has one writer anyway; batching turns N commits and N thread hops into
one, which is most of the cost of a round of 304s. Each poll's events and
state are still written together, so batching changes nothing about what a
crash can lose. One bad record never fails the others: a batch that raises
over its data is retried record by record.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import OperationalError

from aggregator.store import FailureRecord, PollRecord, Store

log = logging.getLogger(__name__)

Record = PollRecord | FailureRecord


class Recorder:
    def __init__(self, store: Store, max_batch: int = 200) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[Record, asyncio.Future[list[int]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def record(self, record: Record) -> list[int]:
        """Commit `record` (with whatever else is waiting); its new event ids."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="recorder")
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await asyncio.to_thread(self._store.record, [r for r, _ in batch])
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
            for (_, future), ids in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(ids)

    async def _one_by_one(self, batch: list[tuple[Record, asyncio.Future[list[int]]]]) -> None:
        for record, future in batch:
            try:
                [ids] = await asyncio.to_thread(self._store.record, [record])
            except Exception as err:
                if not future.done():
                    future.set_exception(err)
            else:
                if not future.done():
                    future.set_result(ids)

    async def aclose(self) -> None:
        """Let the batch being written finish: it may hold polls' state."""
        if self._task is not None:
            await asyncio.shield(self._task)
