"""Unread counts that cost what arrived since they were last asked for.

The dashboard asks for every stream's unread count on each load. Counting
from a stream's last-read mark each time scans its whole backlog: 20 streams
a month behind took half a second at a million events. But events only ever
arrive with higher ids, visible in id order (the writers' lock), so a
stream's count up to id N plus its matches in (N, M] is its count up to M.
Each process keeps, per stream, mark and viewer, the count and the id it
reached, and next time counts only the events after that id.

A stream with `since:`/`until:` selects differently as time passes, not only
as events arrive: its kept count is also counted afresh once a minute, so an
event that left its time range leaves its count within a minute. Events
deleted by retention stay in a kept count until the stream is marked read or
the process restarts; they are older than the retention period, so rarely
unread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.conditions import matching
from aggregator.store.schema import events
from aggregator.visibility import Viewer

KEPT = 10_000  # counts kept per process, the least recently asked-for dropped first
RECOUNT_TIMED = 60.0  # seconds a count of a stream with since:/until: is kept


@dataclass(frozen=True, slots=True)
class _Key:
    stream_id: int
    query: str
    last_read_id: int
    sources: frozenset[str] | None  # the viewer's; None: every source
    cap: int


class UnreadCounts:
    """Thread-safe: a web worker's requests share one."""

    def __init__(self, search: TextSearch) -> None:
        self._search = search
        # key: (counted up to id, count, when it was counted afresh: time.monotonic())
        self._kept: OrderedDict[_Key, tuple[int, int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def count(
        self,
        conn: Connection,
        *,
        stream_id: int,
        query: str,
        flt: EventFilter,
        last_read_id: int,
        viewer: Viewer | None,
        newest: int,
        cap: int,
    ) -> int:
        """How many events up to id `newest` that `viewer` may see match `flt`
        above `last_read_id`, counting no further than `cap + 1`."""
        key = _Key(stream_id, query, last_read_id, viewer.sources if viewer else None, cap)
        now = time.monotonic()
        fresh = (last_read_id, 0, now)
        with self._lock:
            upto, found, since = self._kept.get(key, fresh)
        if flt.bounded_in_time() and now - since > RECOUNT_TIMED:
            upto, found, since = fresh
        if found <= cap and newest > upto:
            found += self._matches(conn, flt, viewer, upto, newest, cap + 1 - found)
            upto = newest
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or kept[0] < upto or kept[2] < since:  # unless another call went on
                self._kept[key] = (upto, found, since)
            self._kept.move_to_end(key)
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return found

    def _matches(
        self,
        conn: Connection,
        flt: EventFilter,
        viewer: Viewer | None,
        after: int,
        upto: int,
        limit: int,
    ) -> int:
        wanted = select(events.c.id).where(
            events.c.id > after,
            events.c.id <= upto,
            matching(conn, flt, self._search, after=after),
        )
        if viewer is not None:
            wanted = wanted.where(viewer.where(events.c.source_id))
        # Newest first: a recent query (`since:`) meets its cap at once.
        inner = wanted.order_by(events.c.id.desc()).limit(limit).subquery()
        return conn.scalar(select(func.count()).select_from(inner)) or 0
