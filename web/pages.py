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
from web.templating import render

PAGE_SIZE = 50


@guard("user")
async def dashboard(request: Request) -> Response:
    state = app_state(request)
    principal = principal_of(request)
    assert principal is not None
    query = request.query_params.get("q", "")
    error = None
    try:
        flt = EventFilter.parse(query)
    except QueryError as err:
        flt, error = None, str(err)
    # Read the tail's position first: whatever it publishes after this, the
    # page's websocket replays; whatever it published before, the query sees.
    published = state.tail.last_id
    events = []
    if flt is not None:
        events = await run_in_threadpool(
            partial(state.store.latest_events, flt, viewer=principal.viewer, limit=PAGE_SIZE)
        )
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
    return render(
        request,
        "index.html",
        {
            "events": events,
            "query": query,
            "error": error,
            "cursor": cursor,
            "source_names": names,
            "source_names_json": json.dumps(names),
        },
        status_code=400 if error else 200,
    )
