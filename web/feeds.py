"""Personal feeds: every saved stream as Atom 1.0, RSS 2.0 and JSON Feed 1.1
at `/feeds/{token}/{stream}.{format}`; `all` is everything the user may see.

Feed readers cannot sign in, so the token in the path is the credential (no
session, no CSRF: these are GETs that change nothing). An unknown or rotated
token, a disabled or deleted user, and another user's stream all answer the
same 404. What a feed shows is cut down to its owner's current rights.

Output is deterministic for the same events, so the ETag is computed before
rendering and a 304 costs one query. The ETag hashes the format, the stream's
name and query, the ids of the events in the feed and the set of sources the
owner may see. That last one stands in for "the access revision": the store's
revision moves on every sign-in anywhere, which would make every feed reader
download everything again for no change.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import partial
from typing import Any

from feedgen.ext.base import BaseEntryExtension  # type: ignore[import-untyped]
from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]
from feedgen.util import xml_elem  # type: ignore[import-untyped]
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.types import Event
from aggregator.visibility import Viewer
from web.auth import guard
from web.forms import parse_id
from web.state import app_state

FEED_SIZE = 50
ALL = "all"  # the stream of everything the user may see
MEDIA_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
CACHE_CONTROL = "private, no-cache"  # keep it, but ask again (a 304 is cheap)
GENERATOR = "Tidings"
UNKNOWN_TYPE = "application/octet-stream"  # RSS and JSON Feed require a type
# Characters XML 1.0 cannot carry at all (lxml refuses them): mail subjects
# and scraped pages do contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def feed_urls(request: Request, token: str, stream: int | str) -> dict[str, str]:
    """The absolute URLs of one stream's feeds, by format."""
    return {fmt: f"{site_url(request)}/feeds/{token}/{stream}.{fmt}" for fmt in MEDIA_TYPES}


def site_url(request: Request) -> str:
    """This site's absolute base URL, without the trailing slash."""
    return str(request.base_url).rstrip("/")


def event_url(base: str, event: Event) -> str:
    """The event's own resource here: the stable id of its feed entries."""
    return f"{base}/api/events/{event.id}"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One feed to render: what it is, where it lives, what is in it."""

    key: str  # the stream id, or "all"
    title: str
    query: str
    base: str
    self_url: str
    events: Sequence[Event]
    changed_at: datetime  # when the stream's name or query last changed

    @property
    def updated(self) -> datetime:
        """The feed's <updated> and Last-Modified: what changes the content
        moves it forward (an arrival, a new name or query). A change in who
        may see what does not: If-None-Match (the ETag covers it) is exact,
        If-Modified-Since alone may keep a reader's copy until the next arrival."""
        return max([self.changed_at, *(e.ingested_at for e in self.events)])

    @property
    def feed_id(self) -> str:
        # Never the token: an id is shown and shared, the token is a secret.
        if self.key == ALL:
            return f"{self.base}/api/events"
        return f"{self.base}/api/streams/{self.key}"

    @property
    def description(self) -> str:
        return f"Tidings: {self.query}" if self.query else "Tidings: everything you may see"


def _x(text: str | None) -> str:
    return _NOT_XML.sub("", text or "")


def entry_title(event: Event) -> str:
    return event.title or event.summary[:80] or f"{event.verb} {event.object_type}"


def author_name(event: Event) -> str:
    return event.actor.name or event.source_id


def attachments(event: Event) -> list[dict[str, Any]]:
    """The event's enclosures and media ({"url", "type", "length"})."""
    found: list[dict[str, Any]] = event.to_json()["attachments"]
    return found


class _AtomEnclosures(BaseEntryExtension):  # type: ignore[misc]
    """Atom `<link rel="enclosure">`s. Written here because feedgen 1.0 writes
    an entry's links without rel, type or length: an enclosure would read as
    a second alternate link."""

    def __init__(self) -> None:
        self.attachments: list[dict[str, Any]] = []

    def extend_atom(self, entry: Any) -> Any:
        for a in self.attachments:
            link = xml_elem("link", entry, rel="enclosure", href=_x(a["url"]))
            if a["type"]:
                link.set("type", _x(a["type"]))
            if a["length"]:
                link.set("length", str(a["length"]))
        return entry


def render_atom(spec: FeedSpec) -> bytes:
    fg = _generator(spec, "atom")
    for event in spec.events:
        fe = fg.add_entry(order="append")
        fe.id(event_url(spec.base, event))
        _common_entry(fe, spec, event, html_summary=False)
        fe.published(event.published)
        if found := attachments(event):
            fe.register_extension("tidings", _AtomEnclosures, atom=True, rss=False)
            fe.tidings.attachments = found
    body: bytes = fg.atom_str(pretty=False)
    return body


def render_rss(spec: FeedSpec) -> bytes:
    fg = _generator(spec, "rss")
    fg.load_extension("dc", atom=False, rss=True)
    for event in spec.events:
        fe = fg.add_entry(order="append")
        fe.guid(event_url(spec.base, event), permalink=False)
        _common_entry(fe, spec, event, html_summary=True)
        fe.pubDate(event.published)
        # RSS <author> must be an e-mail address; a name goes in dc:creator.
        fe.dc.dc_creator(_x(author_name(event)))
        if found := attachments(event):  # RSS has room for one enclosure
            first = found[0]
            fe.enclosure(
                _x(first["url"]), str(first["length"] or 0), _x(first["type"]) or UNKNOWN_TYPE
            )
    body: bytes = fg.rss_str(pretty=False)
    return body


def _generator(spec: FeedSpec, fmt: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.link(href=spec.self_url, rel="self", type=MEDIA_TYPES[fmt])
    fg.id(spec.feed_id)
    fg.title(_x(spec.title))
    fg.subtitle(_x(spec.description))  # also the RSS channel description
    fg.author({"name": GENERATOR})
    fg.link(href=f"{spec.base}/", rel="alternate")  # the last link is RSS's channel link
    fg.generator(GENERATOR)
    fg.updated(spec.updated)  # never "now": the output must not change by itself
    return fg


def _common_entry(fe: Any, spec: FeedSpec, event: Event, *, html_summary: bool) -> None:
    """What Atom and RSS entries share. The summary is plain text: Atom says
    so (a <summary> without a type), RSS's <description> is HTML, so there
    it is escaped -- a summary that reads "<img onerror=...>" stays text."""
    fe.title(_x(entry_title(event)))
    # Stored links are percent-encoded (safe_url); _x for any stored before that.
    fe.link(href=_x(event.url) or event_url(spec.base, event), rel="alternate")
    fe.updated(event.updated or event.published)
    fe.author({"name": _x(author_name(event))})
    if event.summary:
        summary = _x(event.summary)
        fe.summary(html.escape(summary) if html_summary else summary)
    if event.content_html:
        fe.content(_x(event.content_html), type="html")  # sanitised at ingest (nh3)
    for tag in event.tags:
        fe.category(term=_x(tag))


def render_json(spec: FeedSpec) -> bytes:
    items = []
    for event in spec.events:
        item: dict[str, Any] = {
            "id": event_url(spec.base, event),
            "url": event.url or event_url(spec.base, event),
            "title": entry_title(event),
            "date_published": event.published.isoformat(),
            "authors": [
                {k: v for k, v in (("name", author_name(event)), ("url", event.actor.url)) if v}
            ],
            "tags": list(event.tags),
            "_tidings": {"event_id": event.id, "source_id": event.source_id, "verb": event.verb},
        }
        if event.content_html:
            item["content_html"] = event.content_html  # sanitised at ingest (nh3)
        else:
            item["content_text"] = event.summary or entry_title(event)  # one of the two
        if event.summary:
            item["summary"] = event.summary
        if event.updated:
            item["date_modified"] = event.updated.isoformat()
        if found := attachments(event):
            item["attachments"] = [
                {"url": a["url"], "mime_type": a["type"] or UNKNOWN_TYPE}
                | ({"size_in_bytes": a["length"]} if a["length"] else {})
                for a in found
            ]
        items.append(item)
    feed = {
        "version": JSON_FEED_VERSION,
        "title": spec.title,
        "home_page_url": f"{spec.base}/",
        "feed_url": spec.self_url,
        "description": spec.description,
        "authors": [{"name": GENERATOR}],
        "items": items,
    }
    text = json.dumps(feed, ensure_ascii=False, separators=(",", ":"))
    # Escaped as in HTML-safe JSON: a title that says "<script>" stays text
    # even for a client that wrongly drops the feed into a page.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


RENDER = {"atom": render_atom, "rss": render_rss, "json": render_json}


def etag_of(fmt: str, spec: FeedSpec, viewer: Viewer) -> str:
    seen = "*" if viewer.sources is None else sorted(viewer.sources)
    events = [e.id for e in spec.events]
    material = [fmt, spec.key, spec.title, spec.query, spec.self_url, seen, events]
    digest = hashlib.sha256(json.dumps(material).encode()).hexdigest()[:32]
    return f'"{digest}"'


def not_modified(request: Request, etag: str, last_modified: datetime) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present (weak comparison),
    If-Modified-Since only otherwise."""
    given = request.headers.get("if-none-match")
    if given is not None:
        tags = [t.strip().removeprefix("W/") for t in given.split(",")]
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if when.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= when


def _not_found() -> Response:
    return PlainTextResponse("no such feed", status_code=404)


@guard("public")  # the token in the path is the credential
async def personal_feed(request: Request) -> Response:
    fmt = request.path_params["format"]
    if fmt not in MEDIA_TYPES:
        return _not_found()
    state = app_state(request)
    token = request.path_params["token"]
    user_id = await run_in_threadpool(state.store.streams.user_for_feed_token, token)
    if user_id is None:
        return _not_found()
    await state.access.current()
    user = state.access.user(user_id)  # None once disabled or deleted
    if user is None:
        return _not_found()
    viewer = state.access.viewer(user)
    key = request.path_params["stream"]
    if key == ALL:
        title, query, changed = "All events", "", user.created_at
    else:
        try:
            stream_id = parse_id(key, "stream")
        except ValueError:
            return _not_found()
        stream = await run_in_threadpool(state.store.streams.get, user_id, stream_id)
        if stream is None:
            return _not_found()
        title, query, changed, key = stream.name, stream.query, stream.changed_at, str(stream.id)
    try:
        flt = EventFilter.parse(query)
    except QueryError as err:  # saved before the query language changed
        return PlainTextResponse(f"this stream's query no longer works: {err}", status_code=422)
    found = await run_in_threadpool(
        partial(state.store.latest_events, flt, viewer=viewer, limit=FEED_SIZE)
    )
    base = site_url(request)
    spec = FeedSpec(key, title, query, base, f"{base}{request.url.path}", found, changed)
    etag = etag_of(fmt, spec, viewer)
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(spec.updated.astimezone(UTC), usegmt=True),
        "Cache-Control": CACHE_CONTROL,
        "X-Robots-Tag": "noindex, nofollow",
    }
    if not_modified(request, etag, spec.updated):
        return Response(status_code=304, headers=headers)
    body = await run_in_threadpool(RENDER[fmt], spec)
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)
