"""REST: history, single events, source health, liveness, metrics."""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from aggregator import metrics
from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.store import MAX_PAGE
from web.state import app_state

DEFAULT_LIMIT = 50


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, "", "null"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


async def list_events(request: Request) -> Response:
    """Newest first; `cursor` is the `next_cursor` of the previous page."""
    try:
        flt = EventFilter.parse(request.query_params.get("q"))
        cursor = _int_param(request, "cursor")
        limit = _int_param(request, "limit") or DEFAULT_LIMIT
    except (QueryError, ValueError) as err:
        return _bad(str(err))
    limit = max(1, min(limit, MAX_PAGE))
    store = app_state(request).store
    page = await run_in_threadpool(store.latest_events, flt, before=cursor, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return JSONResponse(
        {
            "events": [e.to_json() for e in page],
            "next_cursor": page[-1].id if more and page else None,
        }
    )


async def get_event(request: Request) -> Response:
    store = app_state(request).store
    event = await run_in_threadpool(store.get_event, int(request.path_params["event_id"]))
    if event is None:
        return JSONResponse({"error": "no such event"}, status_code=404)
    return JSONResponse(event.to_json())


async def list_sources(request: Request) -> Response:
    store = app_state(request).store
    rows = await run_in_threadpool(store.source_statuses)

    return JSONResponse(
        {
            "sources": [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "title": s.title,
                    "enabled": s.enabled,
                    "last_poll_at": when(s.last_poll_at),
                    "last_success_at": when(s.last_success_at),
                    "next_poll_at": when(s.next_poll_at),
                    "last_error": s.last_error,
                    "consecutive_failures": s.consecutive_failures,
                    "permanent_redirect": s.permanent_redirect,
                    "event_count": s.event_count,
                }
                for s in rows
            ]
        }
    )


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    try:
        await run_in_threadpool(app_state(request).store.max_event_id)
    except Exception as err:
        return PlainTextResponse(f"store unavailable: {type(err).__name__}", status_code=503)
    return PlainTextResponse("ready")


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
