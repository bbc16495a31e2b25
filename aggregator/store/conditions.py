"""Reads of the events table that several parts of the store share: a query's
SQL condition, and the newest id a viewer may see."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, func, select

from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.schema import events, sources
from aggregator.visibility import Viewer


def matching(
    conn: Connection, flt: EventFilter, search: TextSearch, *, after: int | None = None
) -> ColumnElement[bool]:
    """`flt` on the events table, with its `source:` names resolved to exact ids
    first (one small read of the sources table): an exact id list lets the
    planner walk the (source_id, id) index rather than every event. `after`:
    see EventFilter.where."""
    known = conn.scalars(select(sources.c.id)).all() if flt.names_sources() else ()
    return flt.where(events, search, source_ids=known, after=after)


def newest_id(conn: Connection, viewer: Viewer | None, at_most: int | None = None) -> int:
    """The newest event id (0 when none) of the events `viewer` may see (all
    for None), and no higher than `at_most` when given."""
    query = select(func.coalesce(func.max(events.c.id), 0))
    if viewer is not None:
        query = query.where(viewer.where(events.c.source_id))
    if at_most is not None:
        query = query.where(events.c.id <= at_most)
    return conn.scalar(query) or 0
