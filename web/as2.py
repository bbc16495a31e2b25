"""Each event as Activity Streams 2.0 JSON: `/api/events/{id}.as2`.

The event is the activity (its verb is the AS2 type: Create, Update...); what
it is about is the object. AS2's `summary` and `content` are HTML, so the
plain-text summary is escaped and the content is the HTML sanitised at ingest.
Visibility is the viewer's, as on every read path: an event they may not see
is a 404, as a missing one is.
"""

from __future__ import annotations

import html
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aggregator.types import Event
from web.auth import guard, principal_of
from web.feeds import site_url
from web.forms import path_id
from web.state import app_state

CONTEXT = "https://www.w3.org/ns/activitystreams"
MEDIA_TYPE = "application/activity+json"


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, "", [])}


def activity(event: Event, self_url: str) -> dict[str, Any]:
    """The AS2 document of one event; `self_url` is its absolute URL here."""
    if event.actor.name or event.actor.url:
        actor = _present(type="Person", name=event.actor.name, url=event.actor.url)
    else:  # a feed without authors: the source itself acted
        actor = {"type": "Service", "name": event.source_id}
    obj = _present(
        type=event.object_type,
        id=event.url,
        url=event.url,
        name=event.title,
        summary=html.escape(event.summary),
        content=event.content_html,
        mediaType="text/html" if event.content_html else None,
        published=event.published.isoformat(),
        updated=event.updated.isoformat() if event.updated else None,
        tag=[{"type": "Object", "name": tag} for tag in event.tags],
        attachment=[
            _present(type="Link", href=a["url"], mediaType=a.get("type"))
            for a in event.to_json()["attachments"]
        ],
    )
    when = event.updated if event.verb == "Update" and event.updated else event.published
    return {
        "@context": CONTEXT,
        "type": event.verb,
        "id": self_url,
        "actor": actor,
        "object": obj,
        "published": when.isoformat(),
    }


@guard("user")
async def event_as2(request: Request) -> Response:
    principal = principal_of(request)
    assert principal is not None  # the guard let the request through
    event_id = path_id(request, "event_id")
    event = None
    if event_id is not None:
        store = app_state(request).store
        event = await run_in_threadpool(partial(store.get_event, event_id, viewer=principal.viewer))
    if event is None:  # not there, or not for this viewer: the same answer
        return JSONResponse({"error": "no such event"}, status_code=404)
    self_url = f"{site_url(request)}/api/events/{event.id}.as2"
    return JSONResponse(activity(event, self_url), media_type=MEDIA_TYPE)
