"""The shapes that flow through Tidings: what connectors yield, what the store keeps.

Every datetime here is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

JSON: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
JSONObject: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a person's name (never an address), email and profile URL."""

    name: str | None = None
    email: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class EventData:
    """One item as a connector sees it, before sanitising and storing.

    `external_id` is the source's own id for the item (RSS guid, Atom id,
    Message-ID, API id); the pipeline falls back to the link, then to a hash of
    title and date, when it is missing. `content_html` is raw, foreign HTML.

    `extra` is small JSON stored with the event. Keys the pipeline knows:
    `attachments`, a list of `{"url", "type", "length"}` (enclosures, media;
    `type` a MIME type or None, `length` bytes or None), of which only
    absolute http(s) URLs are kept; and `content_base`, where relative URLs
    in `content_html` resolve when that is not `url` (an XML `xml:base`),
    used while sanitising and not stored.
    """

    external_id: str | None
    title: str = ""
    verb: str = "Create"
    object_type: str = "Article"
    summary: str = ""
    content_html: str = ""
    url: str | None = None
    actor: Actor = field(default_factory=Actor)
    published: datetime | None = None
    updated: datetime | None = None
    tags: tuple[str, ...] = ()
    thread_id: str | None = None
    extra: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event. `id` is monotonic: the cursor every client resumes from."""

    id: int
    source_id: str
    kind: str
    external_id: str
    content_hash: str
    verb: str
    object_type: str
    title: str
    summary: str
    content_html: str
    url: str | None
    actor: Actor
    published: datetime
    updated: datetime | None
    tags: tuple[str, ...]
    thread_id: str | None
    extra: JSONObject
    audience: tuple[str, ...]
    ingested_at: datetime

    def to_json(self) -> JSONObject:
        """The public JSON shape of an event (REST, websocket, JSON feeds)."""
        return {
            "id": self.id,
            "source_id": self.source_id,
            "kind": self.kind,
            "verb": self.verb,
            "object_type": self.object_type,
            "external_id": self.external_id,
            "title": self.title,
            "summary": self.summary,
            "content_html": self.content_html,
            "url": self.url,
            "actor": {"name": self.actor.name, "email": self.actor.email, "url": self.actor.url},
            "published": self.published.isoformat(),
            "updated": self.updated.isoformat() if self.updated else None,
            "tags": list(self.tags),
            "attachments": [dict(a) for a in self.extra.get("attachments") or ()],
            "thread_id": self.thread_id,
            "ingested_at": self.ingested_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll found.

    `state` replaces the source's stored state (None keeps the old one).
    `not_modified` says the upstream answered "nothing changed" (HTTP 304).
    `min_interval` is a hint in seconds (Cache-Control max-age, a feed's TTL)
    the scheduler honours; a Retry-After travels on the ConnectorError
    instead. `permanent_redirect` is shown to admins. `rebaseline`: see below.
    `warning` is shown to admins when the poll succeeded but not all of it
    (items a mapping could not read; the others are stored).
    """

    events: list[EventData] = field(default_factory=list)
    state: JSONObject | None = None
    not_modified: bool = False
    min_interval: float | None = None
    permanent_redirect: str | None = None
    # The connector reads items differently than when it made the stored
    # versions (an upgrade): changed items update what is stored, silently,
    # instead of becoming Update events. New items are still events.
    rebaseline: bool = False
    warning: str | None = None
    # Only from Connector.preview: what a Test found about the source itself,
    # beside its items (an IMAP account's folders), one line each.
    notes: tuple[str, ...] = ()
