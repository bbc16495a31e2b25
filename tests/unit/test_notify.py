"""LISTEN/NOTIFY on a real PostgreSQL (aggregator/notify.py): each transaction
that adds events announces its highest id once, at commit; a listener whose
connection is cut says so, comes back, and asks for a look at what it missed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aggregator.decide import prepare
from aggregator.notify import Listener
from aggregator.store import Store
from aggregator.types import EventData
from tests.stores import store_url
from tests.unit.test_search import NOW, sources


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url(tmp_path))
    s.sync_sources(sources("wiki", "blog"), NOW)
    yield s
    s.close()


class Heard:
    """What a listener reported, and an event to await the next report."""

    def __init__(self) -> None:
        self.ids: list[int | None] = []
        self.states: list[bool] = []
        self.changed = asyncio.Event()

    def event(self, newest: int | None) -> None:
        self.ids.append(newest)
        self.changed.set()

    def state(self, up: bool) -> None:
        self.states.append(up)
        self.changed.set()

    async def until(self, done: Callable[[], bool], wait: float = 10.0) -> None:
        async with asyncio.timeout(wait):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def listening(store: Store) -> AsyncIterator[Heard]:
    """A running listener on the store, and what it reports."""
    heard = Heard()
    listener = Listener(store.url, heard.event, heard.state)
    listener.start()
    try:
        yield heard
    finally:
        await listener.stop()


def poll(store: Store, source: int, *titles: str) -> list[int]:
    src = sources("wiki", "blog")[source]
    items = prepare([EventData(external_id=t, title=t) for t in titles])
    return store.record_poll(src, items, state=None, now=NOW, next_poll_at=NOW)


@pytest.mark.postgresql_only
async def test_each_commit_with_events_is_announced_once_with_its_newest_id(store: Store) -> None:
    async with listening(store) as heard:
        await heard.until(lambda: heard.states == [True] and heard.ids == [None])
        ids = await asyncio.to_thread(poll, store, 0, "a", "b")
        await heard.until(lambda: len(heard.ids) == 2)
        assert heard.ids == [None, max(ids)]
        # Nothing new, nothing said: a poll that found nothing commits no event.
        assert await asyncio.to_thread(poll, store, 0, "a", "b") == []
        more = await asyncio.to_thread(poll, store, 1, "c")
        await heard.until(lambda: len(heard.ids) == 3)
        assert heard.ids == [None, max(ids), more[0]]


@pytest.mark.postgresql_only
async def test_a_listener_cut_off_says_so_comes_back_and_asks_for_a_look(store: Store) -> None:
    async with listening(store) as heard:
        await heard.until(lambda: heard.states == [True])
        with store._write.begin() as conn:  # the server ends the listener's session
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                )
            )
        await heard.until(lambda: heard.states == [True, False, True])
        assert heard.ids == [None, None]  # each connection starts with a look
        ids = await asyncio.to_thread(poll, store, 0, "after")
        await heard.until(lambda: len(heard.ids) == 3)
        assert heard.ids[-1] == ids[0]
