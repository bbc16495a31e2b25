"""Live fan-out of committed events to subscribers in this process.

Publishing is driven by the store, not by the writer: `EventTail` reads every
event with an id above the last one it published, in id order, whenever it is
nudged (after a local commit) or at a short interval (to see commits made by
other processes, such as `tidings poll`). So subscribers see each event once,
in id order, and only after it is committed.

Each subscriber has a bounded queue. A subscriber that falls behind is marked
`overflowed` and gets nothing more; its owner closes it (websocket 1013) and
the client resumes from its cursor. A slow client never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aggregator.types import Event

log = logging.getLogger(__name__)


class Subscription:
    """One subscriber's bounded queue. `accepts` filters at publish time, so a
    narrow subscriber's queue only ever holds what it will send."""

    def __init__(self, bus: Bus, maxsize: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.overflowed = asyncio.Event()
        self.accepts: Callable[[Event], bool] = lambda event: True

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set() or not self.accepts(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class Bus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, events: Sequence[Event]) -> None:
        for sub in tuple(self._subs):
            for event in events:
                sub.offer(event)


class EventTail:
    """Publishes every committed event exactly once, in id order."""

    def __init__(
        self,
        bus: Bus,
        read_after: Callable[[int], Sequence[Event]],
        start_after: int,
        interval: float = 1.0,
    ) -> None:
        self._bus = bus
        self._read_after = read_after
        self.last_id = start_after
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Awaited before each look for new events: the web app reloads its
        # access rules there, so events go out under the rules of their time.
        self.before_publish: Callable[[], Awaitable[object]] | None = None

    def nudge(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("reading new events failed; retrying")

    async def catch_up(self) -> None:
        while True:
            batch = await asyncio.to_thread(self._read_after, self.last_id)
            if self.before_publish is not None:
                # After the read: a rule change committed before these events
                # were is then seen, so they go out under the rules of their time.
                await self.before_publish()
            if not batch:
                return
            self.last_id = batch[-1].id
            self._bus.publish(batch)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
