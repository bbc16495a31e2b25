"""The dashboard: server-rendered, then kept live by /static/app.js."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from aggregator import __version__
from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.humanize import relative_time
from web.state import app_state

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
PAGE_SIZE = 50


def ago(when: datetime) -> str:
    return relative_time(when, datetime.now(UTC), just_now=45)


templates.env.filters["ago"] = ago


async def dashboard(request: Request) -> Response:
    state = app_state(request)
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
        events = await run_in_threadpool(state.store.latest_events, flt, limit=PAGE_SIZE)
    cursor = events[0].id if events else published
    names = {s.id: s.name for s in state.config.sources}
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "events": events,
            "query": query,
            "error": error,
            "cursor": cursor,
            "source_names": names,
            "source_names_json": json.dumps(names),
            "version": __version__,
        },
        status_code=400 if error else 200,
    )
