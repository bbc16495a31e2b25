"""REST for saved streams: list, create, change, delete, reorder, mark read,
the personal-feed token, and an OPML export of the streams' feeds.

Streams belong to accounts: the anonymous setup-mode viewer lists none and
may make none. Another user's stream answers 404, as a missing one does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aggregator.accounts import User
from aggregator.store.streams import UNREAD_CAP, Stream, StreamError, UnknownStreamError
from web.access import Principal
from web.auth import forbidden, guard, principal_of
from web.feeds import ALL, feed_urls, site_url
from web.forms import MAX_ID, parse_id, path_id
from web.state import AppState, app_state

NO_ACCOUNT = (
    "saved streams belong to an account: sign in (or create one with `tidings users create`)"
)


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


def _error(err: Exception) -> JSONResponse:
    if isinstance(err, UnknownStreamError):
        return JSONResponse({"error": "no such stream"}, status_code=404)
    body: dict[str, Any] = {"error": str(err)}
    field = getattr(err, "field", None)
    if field is not None:
        body["field"] = field
    position = getattr(err, "position", None)
    if position is not None:
        body["position"] = position
    return JSONResponse(body, status_code=400)


def _account(request: Request) -> User | None:
    principal = principal_of(request)
    return principal.user if principal is not None else None


def _owner(request: Request) -> tuple[Principal, User, int] | None:
    """Who asks, their account and the stream id in the path; None for a
    request without an account or with a malformed id (both a 404)."""
    principal = principal_of(request)
    stream_id = path_id(request, "stream_id")
    if principal is None or principal.user is None or stream_id is None:
        return None
    return principal, principal.user, stream_id


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    """The string at `key`; None when it is missing or null."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", field=key)
    return value


def _id_value(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{key} must be an integer", field=key)
    try:
        return parse_id(value, key)
    except ValueError as err:
        raise BadRequest(str(err), field=key) from None


def stream_json(request: Request, stream: Stream, token: str, unread: int | None) -> dict[str, Any]:
    return {
        "id": stream.id,
        "name": stream.name,
        "query": stream.query,
        "position": stream.position,
        "last_read_id": stream.last_read_id,
        # None: the saved query no longer parses; counts stop above the cap.
        "unread": None if unread is None else min(unread, UNREAD_CAP),
        "unread_more": unread is not None and unread > UNREAD_CAP,
        "feeds": feed_urls(request, token, stream.id),
    }


def streams_listing(request: Request, state: AppState, principal: Principal) -> dict[str, Any]:
    """What GET /api/streams answers (the dashboard renders the same at once).
    Blocking: call it in a thread."""
    if principal.user is None:  # setup mode's viewer saves nothing
        return {"streams": [], "feeds": None}
    user_id = principal.user.id
    streams = state.store.streams
    found = streams.list(user_id)
    unread = streams.unread_counts(user_id, viewer=principal.viewer)
    token = streams.feed_token(user_id)
    return {
        "streams": [stream_json(request, s, token, unread.get(s.id)) for s in found],
        "feeds": feed_urls(request, token, ALL),
    }


@guard("user")
async def list_streams(request: Request) -> Response:
    principal = principal_of(request)
    assert principal is not None
    state = app_state(request)
    return JSONResponse(await run_in_threadpool(streams_listing, request, state, principal))


@guard("user")
async def create_stream(request: Request) -> Response:
    principal = principal_of(request)
    user = _account(request)
    if principal is None or user is None:
        return forbidden(request, NO_ACCOUNT)
    streams = app_state(request).store.streams
    try:
        body = await _body(request)
        name = _text(body, "name")
        if name is None:
            raise BadRequest("a stream needs a name", field="name")
        query = _text(body, "query") or ""
        stream = await run_in_threadpool(
            partial(
                streams.create,
                user.id,
                name,
                query,
                now=datetime.now(UTC),
                viewer=principal.viewer,
            )
        )
    except (BadRequest, StreamError) as err:
        return _error(err)
    token = await run_in_threadpool(streams.feed_token, user.id)
    return JSONResponse(
        stream_json(request, stream, token, 0),
        status_code=201,
        headers={"Location": f"{site_url(request)}/api/streams/{stream.id}"},
    )


@guard("user")
async def one_stream(request: Request) -> Response:
    """GET, PATCH {"name", "query"} (either or both) and DELETE one stream."""
    owner = _owner(request)
    if owner is None:
        return _error(UnknownStreamError(0))
    principal, user, stream_id = owner
    streams = app_state(request).store.streams
    try:
        if request.method == "DELETE":
            await run_in_threadpool(streams.delete, user.id, stream_id)
            return Response(status_code=204)
        if request.method == "PATCH":
            body = await _body(request)
            name, query = _text(body, "name"), _text(body, "query")
            if name is None and query is None:
                raise BadRequest("send a new name or query, or both")
            now = datetime.now(UTC)
            stream = await run_in_threadpool(
                partial(
                    streams.update,
                    user.id,
                    stream_id,
                    now=now,
                    viewer=principal.viewer,
                    name=name,
                    query=query,
                )
            )
        else:
            found = await run_in_threadpool(streams.get, user.id, stream_id)
            if found is None:
                raise UnknownStreamError(stream_id)
            stream = found
    except (BadRequest, StreamError) as err:
        return _error(err)
    unread = await run_in_threadpool(
        partial(streams.unread_counts, user.id, viewer=principal.viewer, stream_id=stream.id)
    )
    token = await run_in_threadpool(streams.feed_token, user.id)
    return JSONResponse(stream_json(request, stream, token, unread.get(stream.id)))


@guard("user")
async def reorder_streams(request: Request) -> Response:
    """PUT {"ids": [...]}: every one of the user's stream ids, in the new order."""
    user = _account(request)
    if user is None:
        return forbidden(request, NO_ACCOUNT)
    try:
        ids = (await _body(request)).get("ids")
        if not isinstance(ids, list):
            raise BadRequest("ids must be a list of stream ids", field="ids")
        order = [_id_value(i, "ids") for i in ids]
        await run_in_threadpool(app_state(request).store.streams.reorder, user.id, order)
    except (BadRequest, StreamError) as err:
        return _error(err)
    return Response(status_code=204)


@guard("user")
async def mark_read(request: Request) -> Response:
    """{"up_to": ID}: everything up to that event id is read (it never moves
    back). Without `up_to`, everything the user may see now is: the store
    stops every mark at the newest event the user may see."""
    owner = _owner(request)
    if owner is None:
        return _error(UnknownStreamError(0))
    principal, user, stream_id = owner
    streams = app_state(request).store.streams
    try:
        raw = (await _body(request)).get("up_to")
        up_to = MAX_ID if raw is None else _id_value(raw, "up_to")
        last = await run_in_threadpool(
            partial(streams.mark_read, user.id, stream_id, up_to, viewer=principal.viewer)
        )
    except (BadRequest, StreamError) as err:
        return _error(err)
    return JSONResponse({"id": stream_id, "last_read_id": last})


@guard("user")
async def rotate_feed_token(request: Request) -> Response:
    """A new feed token: every feed URL the user had stops working."""
    user = _account(request)
    if user is None:
        return forbidden(request, NO_ACCOUNT)
    token = await run_in_threadpool(app_state(request).store.streams.rotate_feed_token, user.id)
    return JSONResponse({"feeds": feed_urls(request, token, ALL)})


@guard("user")
async def export_opml(request: Request) -> Response:
    """OPML 2.0: each stream's Atom feed, for a feed reader to import."""
    user = _account(request)
    if user is None:
        return forbidden(request, NO_ACCOUNT)
    streams = app_state(request).store.streams
    found = await run_in_threadpool(streams.list, user.id)
    token = await run_in_threadpool(streams.feed_token, user.id)
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = f"Tidings streams of {user.name}"
    ET.SubElement(head, "dateCreated").text = format_datetime(datetime.now(UTC), usegmt=True)
    body = ET.SubElement(root, "body")
    for stream in found:
        ET.SubElement(
            body,
            "outline",
            type="rss",
            text=stream.name,
            title=stream.name,
            xmlUrl=feed_urls(request, token, stream.id)["atom"],
            htmlUrl=f"{site_url(request)}/",
        )
    text = ET.tostring(root, encoding="unicode")
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode(),
        media_type="text/x-opml",
        headers={
            "Content-Disposition": 'attachment; filename="tidings-streams.opml"',
            "Cache-Control": "private, no-store",
        },
    )
