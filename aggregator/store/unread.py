"""Unread counts that cost what arrived since they were last asked for.

The dashboard asks for every stream's unread count on each load. Counting
from a stream's last-read mark each time scans its whole backlog: 20 streams
a month behind took half a second at a million events. But events only ever
arrive with higher ids, visible in id order (the writers' lock), so a
stream's count up to id N plus its matches in (N, M] is its count up to M.
Each process keeps, per stream, mark and viewer, the count and the id it
reached, and next time counts only the events after that id.

A count that went through a long stretch of ids (KEEP_SPAN) is also written
to the store (`unread_counts`), so a restarted process, or another web
worker, goes on from it instead of counting the backlog again. Only such
counts are written: a reload that counted a few new events writes nothing.
They are written after the read transaction they were counted in has ended,
so a dashboard load never holds a read open while it waits for the writers.

Deleting events (retention, a source's deletion) breaks "count up to N plus
what is newer": the transaction that deletes drops the store's counts whose
range may hold them and bumps a generation (GENERATION in `settings`). A
process drops its own kept counts when it sees the generation move, and a
count made under an older generation is never written, so none outlives the
events it counted.

A stream with `since:`/`until:` selects differently as time passes, not only
as events arrive: its kept count is also counted afresh once a minute, so an
event that left its time range leaves its count within a minute; such counts
are never written to the store.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.conditions import matching, walk_beyond_for
from aggregator.store.people import bump_revision, read_revision
from aggregator.store.schema import events, unread_counts
from aggregator.visibility import Viewer

log = logging.getLogger(__name__)

KEPT = 10_000  # counts kept per process, the least recently asked-for dropped first
RECOUNT_TIMED = 60.0  # seconds a count of a stream with since:/until: is kept
KEEP_SPAN = 5_000  # a count that went through this many ids or more is written to the store
GENERATION = "unread_generation"  # settings key, bumped by every deletion of events


@dataclass(frozen=True, slots=True)
class Counted:
    """A stream as its count depends on it."""

    stream_id: int
    query: str
    flt: EventFilter
    last_read_id: int


@dataclass(frozen=True, slots=True)
class _Key:
    stream_id: int
    query: str
    last_read_id: int
    sources: frozenset[str] | None  # the viewer's; None: every source
    cap: int

    def viewer_digest(self) -> str:
        ids = "*" if self.sources is None else "\n".join(sorted(self.sources))
        return _digest(ids)

    def basis(self) -> str:
        return _digest(f"{self.query}\n{self.cap}")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ToKeep:
    """Counts to write to the store (UnreadCounts.keep), made under `generation`:
    (key, counted up to id, count)."""

    generation: int
    counts: tuple[tuple[_Key, int, int], ...]


_Kept = tuple[int, int, float, int]  # counted up to id, count, when afresh (monotonic), generation


class UnreadCounts:
    """Thread-safe: a web worker's requests share one. Without `writing`
    (a write transaction on the store) nothing is read from or written to the
    store's kept counts."""

    def __init__(
        self,
        search: TextSearch,
        writing: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        self._search = search
        self._writing = writing
        self._kept: OrderedDict[_Key, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def counts(
        self,
        conn: Connection,
        streams: Sequence[Counted],
        *,
        viewer: Viewer | None,
        newest: int,
        cap: int,
    ) -> tuple[dict[int, int], ToKeep]:
        """By stream id: how many events up to id `newest` that `viewer` may
        see match each stream above its last-read id, counting no further
        than `cap + 1`; and what to write to the store with `keep` once
        `conn`'s transaction has ended."""
        generation = read_revision(conn, GENERATION)  # before the counts: same snapshot or older
        sources = viewer.sources if viewer else None
        keys = {
            s.stream_id: _Key(s.stream_id, s.query, s.last_read_id, sources, cap) for s in streams
        }
        held: dict[_Key, tuple[int, int, float]] = {}
        with self._lock:
            for key in keys.values():
                kept = self._kept.get(key)
                if kept is not None and kept[3] == generation:
                    held[key] = kept[:3]
        stored = self._stored(conn, [k for k in keys.values() if k not in held])
        found: dict[int, int] = {}
        keep: list[tuple[_Key, int, int]] = []
        for s in streams:
            key = keys[s.stream_id]
            timed = s.flt.bounded_in_time()
            start = held.get(key) or (None if timed else stored.get(key))
            went_from, count, upto = self._count(conn, s, key, viewer, start, newest, generation)
            if not timed and upto - went_from >= KEEP_SPAN:
                keep.append((key, upto, count))
            found[s.stream_id] = count
        return found, ToKeep(generation, tuple(keep))

    def keep(self, kept: ToKeep) -> None:
        """Write counts to the store, replacing what it had for the stream
        and viewer, unless events were deleted since they were made. A
        failure loses only the shortcut, never the answer."""
        if self._writing is None or not kept.counts:
            return
        try:
            with self._writing() as conn:
                if read_revision(conn, GENERATION) != kept.generation:
                    return  # they may hold deleted events
                for key, upto, count in kept.counts:
                    viewer = key.viewer_digest()
                    conn.execute(
                        delete(unread_counts).where(
                            unread_counts.c.stream_id == key.stream_id,
                            unread_counts.c.viewer == viewer,
                        )
                    )
                    conn.execute(
                        insert(unread_counts).values(
                            stream_id=key.stream_id,
                            viewer=viewer,
                            basis=key.basis(),
                            last_read_id=key.last_read_id,
                            upto_id=upto,
                            unread=count,
                        )
                    )
        except SQLAlchemyError as exc:  # e.g. the stream was deleted meanwhile
            log.warning("unread counts not kept in the store: %s", type(exc).__name__)

    def _count(
        self,
        conn: Connection,
        stream: Counted,
        key: _Key,
        viewer: Viewer | None,
        start: tuple[int, int, float] | None,
        newest: int,
        generation: int,
    ) -> tuple[int, int, int]:
        """Go on from `start` (a kept count, if any) to `newest` and keep the
        result in the process; (the id counted from, the count, the id reached)."""
        now = time.monotonic()
        upto, count, since = start or (stream.last_read_id, 0, now)
        if stream.flt.bounded_in_time() and now - since > RECOUNT_TIMED:
            upto, count, since = stream.last_read_id, 0, now
        went_from = upto
        if count <= key.cap and newest > upto:
            count += self._matches(conn, stream.flt, viewer, upto, newest, key.cap + 1 - count)
            upto = newest
        with self._lock:
            kept = self._kept.get(key)
            # Unless another call went on further, or counted after a deletion.
            if (
                kept is None
                or kept[3] < generation
                or (kept[3] == generation and (kept[0] < upto or kept[2] < since))
            ):
                self._kept[key] = (upto, count, since, generation)
            self._kept.move_to_end(key)
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return went_from, count, upto

    def _stored(self, conn: Connection, keys: Sequence[_Key]) -> dict[_Key, tuple[int, int, float]]:
        """The store's kept counts for `keys` that still hold (same query,
        mark and cap); all keys share one viewer."""
        if self._writing is None or not keys:
            return {}
        by_stream = {k.stream_id: k for k in keys}
        rows = conn.execute(
            select(unread_counts).where(
                unread_counts.c.stream_id.in_(by_stream),
                unread_counts.c.viewer == keys[0].viewer_digest(),
            )
        )
        now = time.monotonic()
        return {
            key: (r.upto_id, r.unread, now)
            for r in rows
            if (key := by_stream[r.stream_id]).basis() == r.basis
            and key.last_read_id == r.last_read_id
        }

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
            matching(
                conn,
                flt,
                self._search,
                after=after,
                walk_beyond=walk_beyond_for(limit, upto - after),
            ),
        )
        if viewer is not None:
            wanted = wanted.where(viewer.where(events.c.source_id))
        # Newest first: a recent query (`since:`) meets its cap at once.
        inner = wanted.order_by(events.c.id.desc()).limit(limit).subquery()
        return conn.scalar(select(func.count()).select_from(inner)) or 0


def forget_deleted(conn: Connection, newest_deleted: int | None) -> None:
    """In the transaction that deletes events up to id `newest_deleted`:
    drop the store's kept counts that may have counted them, and tell every
    process to drop its own."""
    if newest_deleted is not None:
        conn.execute(delete(unread_counts).where(unread_counts.c.last_read_id < newest_deleted))
        bump_revision(conn, GENERATION)
