"""A query's SQL condition as the store reads with it."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, select

from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.schema import events, sources


def matching(conn: Connection, flt: EventFilter, search: TextSearch) -> ColumnElement[bool]:
    """`flt` on the events table, with its `source:` names resolved to exact ids
    first (one small read of the sources table): an exact id list lets the
    planner walk the (source_id, id) index rather than every event."""
    known = conn.scalars(select(sources.c.id)).all() if flt.names_sources() else ()
    return flt.where(events, search, source_ids=known)
