"""Reads of the events table that several parts of the store share: a query's
SQL condition (with what it needs to know of the data to pick its plan), and
the newest id a viewer may see."""

from __future__ import annotations

import math

from sqlalchemy import ColumnElement, Connection, func, select

from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.schema import event_tags, events, sources
from aggregator.visibility import Viewer

# Events with a tag beyond which a query walks the events and looks each up,
# rather than list the tag's: at 1,000,000 events a page costs about the same
# either way between 10,000 and 20,000 (docs/benchmarks.md, Unread counts).
COMMON_TAG = 10_000
# Listing costs ~0.15 us per tagged event in the range; walking ~0.75 us per
# event until `limit` are found, i.e. limit * range / tagged events. The two
# cost the same at sqrt(WALK_PER_LIST * limit * range) tagged events.
WALK_PER_LIST = 5


def matching(
    conn: Connection,
    flt: EventFilter,
    search: TextSearch,
    *,
    after: int | None = None,
    walk_beyond: int | None = None,
) -> ColumnElement[bool]:
    """`flt` on the events table, with its `source:` names resolved to exact ids
    first (one small read of the sources table): an exact id list lets the
    planner walk the (source_id, id) index rather than every event. Each
    `tag:` value is looked up once too: a tag on more than `walk_beyond`
    (COMMON_TAG) events above `after` is walked, a rarer one listed
    (walk_beyond_for gives it for a known range and limit). `after`: see
    EventFilter.where."""
    known = conn.scalars(select(sources.c.id)).all() if flt.names_sources() else ()
    beyond = COMMON_TAG if walk_beyond is None else walk_beyond
    common = [tag for tag in flt.tags() if _is_common(conn, tag, after, beyond)]
    return flt.where(events, search, source_ids=known, after=after, common_tags=common)


def walk_beyond_for(limit: int, span: int) -> int:
    """The tagged events beyond which walking `span` ids newest first for
    `limit` matches costs less than listing the tag's events in it."""
    return max(COMMON_TAG, math.isqrt(WALK_PER_LIST * limit * span))


def _is_common(conn: Connection, tag: str, after: int | None, walk_beyond: int) -> bool:
    """Whether more than `walk_beyond` events above `after` have `tag`: one
    index range read that stops there (0.3 ms at 1,000,000 events for 10,000)."""
    beyond = (
        select(event_tags.c.tag)
        .where(event_tags.c.tag == tag, event_tags.c.event_id > (after or 0))
        .limit(1)
        .offset(walk_beyond)
    )
    return conn.execute(beyond).first() is not None


def newest_id(conn: Connection, viewer: Viewer | None, at_most: int | None = None) -> int:
    """The newest event id (0 when none) of the events `viewer` may see (all
    for None), and no higher than `at_most` when given."""
    query = select(func.coalesce(func.max(events.c.id), 0))
    if viewer is not None:
        query = query.where(viewer.where(events.c.source_id))
    if at_most is not None:
        query = query.where(events.c.id <= at_most)
    return conn.scalar(query) or 0
