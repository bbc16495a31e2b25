"""Push for polled kinds: a watcher per source whose connector can `watch`
(IMAP IDLE) turns "the server says something is new" into a poll now.

Such a source stays an ordinary polled source (its interval is the fallback
when the server lacks push or the watch is down); the watch only makes it due
sooner. A connector opts in by defining

    async def watch(self, ctx: PollContext, wake: Callable[[], None]) -> None

which runs until cancelled, calls `wake()` (on the event loop) whenever a
poll would find something, returns at once when it cannot push (no IDLE),
and raises when its connection breaks: it is then started again after a
backoff (1 s doubling to 60 s, with jitter). Wakes that arrive while a poll
runs make one more poll afterwards, so nothing announced is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aggregator.config import SourceConfig
from aggregator.connector import PollContext
from aggregator.registry import connector_class

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
STABLE = 60.0  # a watch that lasted this long starts its backoff over


class Watchable(Protocol):
    async def watch(self, ctx: PollContext, wake: Callable[[], None]) -> None: ...


def watchable(source: SourceConfig) -> bool:
    try:
        cls = connector_class(source.kind)
    except Exception:  # a kind not installed here: the poller hands it back
        return False
    return source.enabled and callable(getattr(cls, "watch", None))


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """A watch's state ("watching", "reconnecting", "no push") since when, and
    the error that made it reconnect."""

    state: str
    since: datetime
    error: str | None = None


class Watchers:
    """One watch task per watchable source; `sync` follows the source list."""

    def __init__(
        self,
        poll: Callable[[str], Awaitable[Any]],
        context: Callable[[SourceConfig], PollContext],
    ) -> None:
        self._poll = poll
        self._context = context
        self._tasks: dict[str, tuple[SourceConfig, asyncio.Task[None]]] = {}
        self._status: dict[str, WatchStatus] = {}

    def status(self, source_id: str) -> WatchStatus | None:
        """How the watch of a source is doing, for admins; None: not watched here."""
        return self._status.get(source_id)

    def _set(self, source_id: str, state: str, error: str | None = None) -> None:
        self._status[source_id] = WatchStatus(state, datetime.now(UTC), error)

    def sync(self, sources: Iterable[SourceConfig]) -> None:
        """Start watches for new or changed sources, stop those of gone ones."""
        wanted = {s.id: s for s in sources if watchable(s)}
        for sid, (source, task) in list(self._tasks.items()):
            if wanted.get(sid) != source:
                task.cancel()
                del self._tasks[sid]
                self._status.pop(sid, None)
        for sid, source in wanted.items():
            if sid not in self._tasks:
                task = asyncio.create_task(self._run(source), name=f"watch:{sid}")
                self._tasks[sid] = (source, task)

    @property
    def watching(self) -> list[str]:
        return sorted(sid for sid, (_, task) in self._tasks.items() if not task.done())

    async def aclose(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, source: SourceConfig) -> None:
        connector: Watchable = connector_class(source.kind)(source.options)  # type: ignore[assignment]
        woken = asyncio.Event()
        pump = asyncio.create_task(self._pump(source.id, woken), name=f"watch-poll:{source.id}")
        failures = 0
        try:
            while True:
                started = time.monotonic()
                self._set(source.id, "watching")
                try:
                    await connector.watch(self._context(source), woken.set)
                except Exception as err:
                    if time.monotonic() - started >= STABLE:
                        failures = 0
                    failures += 1
                    delay = min(MAX_BACKOFF, 2.0 ** (failures - 1)) * random.uniform(0.8, 1.2)
                    log.warning("watch of %s: %s; again in %.1fs", source.id, err, delay)
                    self._set(source.id, "reconnecting", str(err))
                    await asyncio.sleep(delay)
                else:
                    log.info("source %s has no push: it is polled at its interval", source.id)
                    self._set(source.id, "no push")
                    return
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, source_id: str, woken: asyncio.Event) -> None:
        while True:
            await woken.wait()
            woken.clear()
            try:
                await self._poll(source_id)
            except Exception:  # the store failed: the next wake or the interval retries
                log.exception("poll of %s after a push failed", source_id)
