"""Live fan-out of committed events to subscribers in this process.

Publishing is driven by the store, not by the writer: `EventTail` reads every
event with an id above the last one it published, in id order, whenever it is
nudged (after a local commit) or every 25 ms (to see commits made by other
processes, such as `tidings poller`). So subscribers see each event once,
in id order, and only after it is committed.

Each subscriber has a bounded queue. A subscriber that falls behind is marked
`overflowed` and gets nothing more; its owner closes it (websocket 1013) and
the client resumes from its cursor. A slow client never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from aggregator.store import MAX_PAGE
from aggregator.types import Event

log = logging.getLogger(__name__)


class EventQueue(deque[Event]):
    """A subscriber's queue: a deque (bounded by its Subscription), with the two
    `asyncio.Queue` methods its readers use."""

    def empty(self) -> bool:
        return not self

    def get_nowait(self) -> Event:
        return self.popleft()


class Subscription:
    """One subscriber's bounded queue. `accepts` filters at publish time, so a
    narrow subscriber's queue only ever holds what it will send. `wake`, when
    set, is called whenever an event is queued or the queue overflows: the
    owner waits for that one signal rather than for a task per event, which
    matters when one event goes to a thousand subscribers."""

    def __init__(self, bus: Bus, maxsize: int) -> None:
        self._bus = bus
        self.maxsize = maxsize
        self.queue = EventQueue()
        self.overflowed = asyncio.Event()
        self.accepts: Callable[[Event], bool] = lambda event: True
        self.wake: Callable[[], object] | None = None
        # The owner's fast path, when it has one: handle the event at once if
        # it can without waiting (True), else leave it to the queue (False).
        self.direct: Callable[[Event], Awaitable[bool]] | None = None

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set() or not self.accepts(event):
            return
        if len(self.queue) < self.maxsize:
            self.queue.append(event)
        else:
            self.overflowed.set()
        if self.wake is not None:
            self.wake()

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

    async def fan_out(self, events: Sequence[Event]) -> None:
        """Offer `events` to every subscriber, letting each one that is idle
        handle an event at once (`Subscription.direct`): for a thousand
        websockets that saves a task switch per client and event. Anything a
        subscriber cannot take at once, and all that follows it, goes through
        its queue, in order."""
        for sub in tuple(self._subs):
            direct = sub.direct
            for event in events:
                if direct is not None and not sub.queue and await direct(event):
                    continue
                sub.offer(event)


class EventTail:
    """Publishes every committed event exactly once, in id order.

    It looks for new events when nudged (after a commit in this process) and
    every `interval` seconds, which is how commits by other processes (`tidings
    poller`, `tidings poll`, another web worker) reach this one's subscribers:
    their latency is at most `interval` plus the fan-out. A look is one read of
    the primary key range after `last_id` that usually finds nothing, but with
    its thread hop it costs about 0.75 ms of CPU on SQLite: an idle server
    spends about 3% of a core on looks every 25 ms (0.3% at 1 s). A server
    whose poller runs in-process is nudged for its own commits and can look
    less often; on PostgreSQL every commit nudges it through LISTEN/NOTIFY
    (aggregator.notify) and it looks every second as well. The access rules
    (`before_publish`) are checked after every look that found events, and at
    least every `rules_interval` seconds otherwise, so a change made elsewhere
    (a revoked token) still closes open sockets within about a second.
    """

    def __init__(
        self,
        bus: Bus,
        read_after: Callable[[int], Sequence[Event]],
        start_after: int,
        interval: float = 0.025,
        rules_interval: float = 1.0,
        page: int = MAX_PAGE,
    ) -> None:
        self._bus = bus
        self._read_after = read_after
        self.last_id = start_after
        self.interval = interval  # may change while it runs (aggregator.notify)
        self._rules_interval = rules_interval
        self._page = page  # the most `read_after` returns at once
        self._rules_checked = float("-inf")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Awaited after each read that found events, before they are
        # published: the web app reloads its access rules there, so events go
        # out under the rules of their time.
        self.before_publish: Callable[[], Awaitable[object]] | None = None

    def nudge(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            interval = self.interval
            try:
                due = started - self._rules_checked >= self._rules_interval
                await self.catch_up(check_rules=due)
            except Exception:
                log.exception("reading new events failed; retrying in a second")
                interval = max(interval, 1.0)
            # At a fixed rate: the time a look took (a fan-out keeps the loop
            # busy meanwhile) does not stretch the interval.
            delay = started + interval - loop.time()
            if delay > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def catch_up(self, *, check_rules: bool = True) -> None:
        """Publish everything committed after `last_id`. The rules are checked
        after each read that found events, and after an empty one when
        `check_rules` says so."""
        while True:
            batch = await asyncio.to_thread(self._read_after, self.last_id)
            if self.before_publish is not None and (batch or check_rules):
                # After the read: a rule change committed before these events
                # were is then seen, so they go out under the rules of their time.
                await self.before_publish()
                self._rules_checked = asyncio.get_running_loop().time()
            if batch:
                self.last_id = batch[-1].id
                await self._bus.fan_out(batch)
            if len(batch) < self._page:
                return  # all there was; what is committed later, the next look finds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
