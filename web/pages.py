"""The dashboard: server-rendered, then kept live by /static/app.js."""

from __future__ import annotations

import json
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from web.auth import guard, principal_of
from web.state import app_state
from web.streams import streams_listing
from web.templating import render

PAGE_SIZE = 50


def error_parts(query: str, position: int) -> tuple[str, str, str]:
    """The query split around the character a parse error points at; a
    position at the end marks a blank, so "missing something" shows too."""
    position = max(0, min(position, len(query)))
    return query[:position], query[position : position + 1] or " ", query[position + 1 :]


# Activity Streams verbs whose past tense is not the verb plus "d" or "ed".
_PAST = {"read": "read", "undo": "undid", "leave": "left"}


def verb_label(verb: str) -> str:
    """How a verb reads beside an event: Update -> updated (app.js agrees)."""
    word = verb.lower()
    return _PAST.get(word) or (word + "d" if word.endswith("e") else word + "ed")


@guard("user")
async def dashboard(request: Request) -> Response:
    state = app_state(request)
    principal = principal_of(request)
    assert principal is not None
    query = request.query_params.get("q", "")
    error = error_at = None
    try:
        flt = EventFilter.parse(query)
    except QueryError as err:
        flt, error, error_at = None, str(err), error_parts(query, err.position)
    # Read the tail's position first: whatever it publishes after this, the
    # page's websocket replays; whatever it published before, the query sees.
    published = state.tail.last_id
    events = []
    if flt is not None:
        # One more than a page: whether an older page exists, without asking again.
        events = await run_in_threadpool(
            partial(state.store.latest_events, flt, viewer=principal.viewer, limit=PAGE_SIZE + 1)
        )
    older = events[PAGE_SIZE - 1].id if len(events) > PAGE_SIZE else None
    events = events[:PAGE_SIZE]
    if events:
        cursor = events[0].id
    else:
        # Not `published` itself: that is the newest id of every source, and
        # polling a query that matches nothing would show when sources this
        # viewer may not see get events. No event the viewer may see lies
        # between this id and `published`; the websocket replays the rest.
        cursor = await run_in_threadpool(
            partial(state.store.max_event_id, viewer=principal.viewer, at_most=published)
        )
    names = await run_in_threadpool(partial(state.store.source_names, viewer=principal.viewer))
    saved = await run_in_threadpool(streams_listing, request, state, principal)
    return render(
        request,
        "index.html",
        {
            "events": events,
            "query": query,
            "error": error,
            "error_at": error_at,
            "cursor": cursor,
            "older": older,
            # Setup mode's viewer is nobody: it reads, it saves no streams.
            "can_save": principal.user is not None,
            "streams": saved["streams"],
            "streams_json": json.dumps(saved),
            "source_names": names,
            "source_names_json": json.dumps(names),
            "verb_label": verb_label,
        },
        status_code=400 if error else 200,
    )
