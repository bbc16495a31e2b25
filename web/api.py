"""REST: history, search, single events, source health, liveness, metrics."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from aggregator import metrics
from aggregator.dburl import password_of
from aggregator.exceptions import QueryError, blot, driver_error, first_line
from aggregator.filters import EventFilter
from aggregator.store import MAX_PAGE
from web.access import Principal
from web.auth import guard, principal_of
from web.forms import parse_id, path_id
from web.state import app_state

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def bad_query(err: QueryError) -> JSONResponse:
    """A query that does not parse: 400 with the message and the 0-based
    character offset of the culprit, for an editor to point at."""
    return JSONResponse({"error": err.reason, "position": err.position}, status_code=400)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, "", "null"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


def viewer_principal(request: Request) -> Principal:
    principal = principal_of(request)
    assert principal is not None  # the guard let the request through
    return principal


def _query_and_limit(request: Request) -> tuple[EventFilter, int]:
    """`q` parsed and `limit` clamped to 1..MAX_PAGE (both event lists take them).
    Raises QueryError or ValueError for a bad one."""
    flt = EventFilter.parse(request.query_params.get("q"))
    limit = _int_param(request, "limit") or DEFAULT_LIMIT
    return flt, max(1, min(limit, MAX_PAGE))


@guard("user")
async def list_events(request: Request) -> Response:
    """Newest first; `cursor` is the `next_cursor` of the previous page."""
    try:
        flt, limit = _query_and_limit(request)
        cursor = _int_param(request, "cursor")
        if cursor is not None:
            cursor = parse_id(cursor, "cursor")
    except QueryError as err:
        return bad_query(err)
    except ValueError as err:
        return _bad(str(err))
    store = app_state(request).store
    viewer = viewer_principal(request).viewer
    page = await run_in_threadpool(
        partial(store.latest_events, flt, viewer=viewer, before=cursor, limit=limit + 1)
    )
    more = len(page) > limit
    page = page[:limit]
    return JSONResponse(
        {
            "events": [e.to_json() for e in page],
            "next_cursor": page[-1].id if more and page else None,
        }
    )


@guard("user")
async def search_events(request: Request) -> Response:
    """`GET /api/search?q=&limit=&offset=`: the events the query selects, most
    relevant first (see Store.search_events); `next_offset` is null on the
    last page. Visibility as for /api/events."""
    try:
        flt, limit = _query_and_limit(request)
        offset = parse_id(_int_param(request, "offset") or 0, "offset")
    except QueryError as err:
        return bad_query(err)
    except ValueError as err:
        return _bad(str(err))
    store = app_state(request).store
    viewer = viewer_principal(request).viewer
    page = await run_in_threadpool(
        partial(store.search_events, flt, viewer=viewer, limit=limit + 1, offset=offset)
    )
    more = len(page) > limit
    return JSONResponse(
        {
            "events": [e.to_json() for e in page[:limit]],
            "next_offset": offset + limit if more else None,
        }
    )


@guard("user")
async def get_event(request: Request) -> Response:
    store = app_state(request).store
    event_id = path_id(request, "event_id")
    event = None
    if event_id is not None:
        event = await run_in_threadpool(
            partial(store.get_event, event_id, viewer=viewer_principal(request).viewer)
        )
    if event is None:  # not there, or not for this viewer: the same answer
        return JSONResponse({"error": "no such event"}, status_code=404)
    return JSONResponse(event.to_json())


@guard("user")
async def list_sources(request: Request) -> Response:
    """The sources the viewer may see. Members get id, kind and title only:
    health (errors above all) is for admins, and the setup-mode viewer who
    also reads /metrics. An error or stop reason quotes the source's address,
    resolver and server answers and the like, which members are not shown,
    as they are not shown the source's URL or audience."""
    store = app_state(request).store
    principal = viewer_principal(request)
    rows = await run_in_threadpool(
        partial(store.source_statuses, viewer=principal.viewer, now=datetime.now(UTC))
    )
    if not principal.is_admin and principal.user is not None:
        return JSONResponse(
            {"sources": [{"id": s.id, "kind": s.kind, "title": s.title} for s in rows]}
        )

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
                    "last_warning": s.last_warning,  # what a successful poll could not read
                    "consecutive_failures": s.consecutive_failures,
                    "disabled_reason": s.disabled_reason,  # null unless a 410 stopped it
                    "permanent_redirect": s.permanent_redirect,
                    "event_count": s.event_count,
                    "events_last_week": s.events_last_week,
                    "audience": list(s.audience),
                    "origin": s.origin,
                }
                for s in rows
            ]
        }
    )


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@guard("public")
async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


class Outage:
    """When to log a failure that lasts and is asked about often: as it
    starts, then once per `every` seconds while it lasts; `ended()` says
    whether one just ended. Time is passed in."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._logged_at: float | None = None  # None: no outage

    def should_log(self, now: float) -> bool:
        if self._logged_at is not None and now - self._logged_at < self.every:
            return False
        self._logged_at = now
        return True

    def ended(self) -> bool:
        was_down, self._logged_at = self._logged_at is not None, None
        return was_down


# Load balancers poll /readyz every few seconds: one warning a minute is plenty.
store_outage = Outage(every=60.0)


@guard("public")
async def readyz(request: Request) -> Response:
    """503 with the reason while the store cannot be read. The endpoint is
    public, so it says what went wrong (the end of the driver's first line:
    "Connection refused", "timeout expired") but not where: libpq's message
    names the host, port and user, which the log gets in full."""
    state = app_state(request)
    try:
        await run_in_threadpool(state.store.max_event_id)
    except Exception as err:
        cause = driver_error(err)
        password = password_of(make_url(state.config.store_url))
        if store_outage.should_log(time.monotonic()):
            said = blot(str(cause).strip(), password)
            log.warning("not ready: the store is unavailable: %s", said)
        what = blot(first_line(cause), password).rsplit(": ", 1)[-1].strip()
        reason = f"{type(err).__name__}: {what}"
        return PlainTextResponse(f"store unavailable: {reason}", status_code=503)
    if store_outage.ended():  # at the warning's level: whoever saw that sees this
        log.warning("ready: the store is available again")
    return PlainTextResponse("ready")


@guard("operator")  # per-source names and counts; scrapers send an admin's token
async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
