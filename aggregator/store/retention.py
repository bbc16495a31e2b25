"""Retention (issue 13): events stored longer ago than their source keeps
them are deleted, a batch at a time.

Age is `events.ingested_at`, when Tidings stored the event. It grows with the
event id, so a source's oldest events are the first ones of its
(source_id, id) index: a batch looks at the head of that index and deletes
what is old there, and a pass over a source that has nothing to delete costs
one index lookup. Each batch is its own short write transaction, so the writer
lock (SQLite's one writer, PostgreSQL's advisory lock) is never held long.

What a deletion leaves alone:
- `entries` (the latest version of every item) stays, so an item still listed
  upstream after its event went is known, not stored again as new.
- Ids are never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so
  a client's cursor or a stream's last-read id that names a deleted event
  still means "after this": reads compare ids, they never look the id up.
  Nothing else holds event ids (`webhook_deliveries` holds the sender's).
- The full-text index follows by itself: FTS5 triggers on SQLite (migration
  0004), ON DELETE CASCADE from `event_search` on PostgreSQL (0008).

Several pollers pruning at once is harmless: each batch is a DELETE of rows
that are old at that moment, so a row another poller took is just not counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select

from aggregator.config import Config, SourceConfig
from aggregator.store.schema import events, sources
from aggregator.store.unread import forget_deleted

log = logging.getLogger(__name__)

BATCH = 2_000  # events per write transaction
# Between batches: lets a waiting writer (a poll's commit) take the lock
# before the next batch does, in this process and in others.
PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each source's events are kept, from one config file: pure.

    `own` holds the sources this config knows (its file's and the web-made
    ones) with their own `retention` (None: `default`). Tidings' alerts
    source and the sources this file defined before and no longer does
    follow `default`. Any other source (another config file's, or a web-made
    one this process cannot load) is left to whoever knows its setting.
    """

    default: float | None = None  # seconds; None: forever
    own: Mapping[str, float | None] = field(default_factory=dict)
    config_file: str | None = None

    @classmethod
    def of(cls, config: Config, known: Iterable[SourceConfig]) -> RetentionPolicy:
        return cls(
            default=config.retention.events_seconds,
            own={s.id: s.retention for s in known},
            config_file=config.source_file,
        )

    def keeps_everything(self) -> bool:
        return self.default is None and all(v is None for v in self.own.values())

    def keep(self, source_id: str, origin: str, file: str | None) -> float | None:
        """Seconds this source's events are kept; None: forever, or not this
        policy's to say."""
        if source_id in self.own:
            own = self.own[source_id]
            return own if own is not None else self.default
        if origin == "system" or (origin == "file" and file == self.config_file):
            return self.default
        return None

    def cutoffs(
        self, rows: Iterable[tuple[str, str, str | None]], now: datetime
    ) -> dict[str, datetime]:
        """For each (source id, origin, config file) whose events expire: the
        time before which they were stored too long ago."""
        found: dict[str, datetime] = {}
        for source_id, origin, file in rows:
            keep = self.keep(source_id, origin, file)
            if keep is not None:
                found[source_id] = now - timedelta(seconds=keep)
        return found


def prune(
    read: Engine,
    writing: Callable[[], AbstractContextManager[Connection]],
    now: datetime,
    policy: RetentionPolicy,
    *,
    batch: int = BATCH,
    stop: threading.Event | None = None,
) -> int:
    """One pass: delete every event stored before its source's cutoff; how
    many went. Setting `stop` ends the pass after the batch under way: a
    first pass over a big store takes minutes, and a poller shutting down
    must not wait for it."""
    stop = stop or threading.Event()
    if policy.keeps_everything():
        return 0
    with read.connect() as conn:
        rows = conn.execute(select(sources.c.id, sources.c.origin, sources.c.config)).all()
        cutoffs = policy.cutoffs(((r.id, r.origin, r.config.get("file")) for r in rows), now)
        due = [s for s, cutoff in sorted(cutoffs.items()) if _oldest_before(conn, s, cutoff)]
    total = 0
    for source_id in due:
        if stop.is_set():
            break
        gone = _prune_source(writing, source_id, cutoffs[source_id], batch, stop)
        if gone:
            log.debug("retention: %d events of %s deleted", gone, source_id)
        total += gone
    return total


def _oldest_before(conn: Connection, source_id: str, cutoff: datetime) -> bool:
    """Whether the source's oldest event is older than `cutoff`: one index
    lookup, and most sources, most hours, have nothing to delete."""
    oldest = conn.scalar(
        select(events.c.ingested_at)
        .where(events.c.source_id == source_id)
        .order_by(events.c.id)
        .limit(1)
    )
    return oldest is not None and oldest < cutoff


def _prune_source(
    writing: Callable[[], AbstractContextManager[Connection]],
    source_id: str,
    cutoff: datetime,
    batch: int,
    stop: threading.Event,
) -> int:
    total = 0
    while True:
        with writing() as conn:
            gone = _delete_batch(conn, source_id, cutoff, batch)
        total += gone
        if gone < batch:
            # The source's last old events, or the head held young ones: the
            # rest are younger still (a straggler waits for the next pass).
            return total
        if stop.wait(PAUSE):
            return total


def _delete_batch(conn: Connection, source_id: str, cutoff: datetime, batch: int) -> int:
    """Delete what is old among the source's `batch` first events. Each row's
    own age decides, so an event stored out of id order (a slow poll's
    commit after a quick one's) is never deleted early."""
    head = (
        select(events.c.id, events.c.ingested_at)
        .where(events.c.source_id == source_id)
        .order_by(events.c.id)
        .limit(batch)
        .subquery()
    )
    old = select(head.c.id).where(head.c.ingested_at < cutoff)
    gone = conn.scalars(delete(events).where(events.c.id.in_(old)).returning(events.c.id)).all()
    forget_deleted(conn, max(gone, default=None))
    return len(gone)
