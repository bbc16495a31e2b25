"""Hears other processes' commits on PostgreSQL (LISTEN/NOTIFY).

Every transaction that adds events notifies `EVENTS_CHANNEL` with its highest
new id (aggregator.store). A web worker listens on its own connection and
nudges its EventTail, which then reads the events by id as it always does: the
notification carries no body, so visibility and queries are applied exactly as
for local commits, and a lost notification costs latency, never an event (the
tail still looks on its own every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from aggregator.dburl import libpq_url
from aggregator.exceptions import first_line
from aggregator.store import EVENTS_CHANNEL

log = logging.getLogger(__name__)

RETRY_MAX = 30.0  # seconds between attempts to listen again, at most


class Listener:
    """LISTENs on its own autocommit connection and calls `on_event(newest_id)`
    for each notification. `on_connected(True/False)` says whether it hears
    them: the caller looks for new events often while it does not. After each
    (re)connection it calls `on_event(None)`, since notifications sent while it
    was away are lost."""

    def __init__(
        self,
        store_url: str,
        on_event: Callable[[int | None], None],
        on_connected: Callable[[bool], None] = lambda up: None,
    ) -> None:
        self._url = libpq_url(store_url)
        self._on_event = on_event
        self._on_connected = on_connected
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="listen:events")

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as err:
                # libpq's message names the host and port, never the password.
                log.warning(
                    "not hearing new events from other processes (%s); retrying", first_line(err)
                )
            except Exception:  # a bug: still keep listening, and say so loudly
                log.exception("listening for new events failed; retrying")
            if self.listening.is_set():  # it was working: try again soon
                delay = 1.0
            self.listening.clear()
            self._on_connected(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _listen(self) -> None:
        # A dead server or network is noticed within about a minute, not TCP's
        # default of hours: meanwhile the tail looks only every second.
        conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=10,
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )  # fmt: skip
        async with conn:
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            self.listening.set()
            self._on_connected(True)
            self._on_event(None)  # what was committed while nobody listened
            async for note in conn.notifies():
                self._on_event(int(note.payload) if note.payload.isdigit() else None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
