"""The OpenAPI 3.1 description of the REST API, written by hand and served at
`/api/openapi.json`.

Written, not generated: the routes are plain Starlette functions, and a
description someone reads is worth the care. A test keeps it honest: it must
validate, and every route under /api and /feeds must be in it.

It is served to signed-in users (and bearer tokens) like the rest of /api:
the public contract says `/api/*` answers 401 without credentials.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aggregator.filters import MAX_QUERY
from aggregator.store import MAX_PAGE
from aggregator.store.streams import MAX_NAME, UNREAD_CAP
from web.auth import guard
from web.feeds import FEED_SIZE

Schema = dict[str, Any]

SIGNED_IN: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


ERRORS: dict[str, Schema] = {
    "401": {"$ref": "#/components/responses/Unauthenticated"},
}
CHANGE_ERRORS: dict[str, Schema] = {
    **ERRORS,
    "403": _error("a session request without its CSRF token, or the setup-mode viewer"),
}


def _id_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


def _query_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _text(description: str) -> Schema:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


# The contract's minimum (DESIGN.md, "The public contract").
EVENT_REQUIRED = [
    "id",
    "source_id",
    "kind",
    "verb",
    "object_type",
    "external_id",
    "title",
    "summary",
    "content_html",
    "url",
    "actor",
    "published",
    "tags",
]

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what went wrong, for people"},
            "field": {"type": "string", "description": "the input at fault"},
            "position": {
                "type": "integer",
                "description": "0-based index of the culprit in a bad query",
            },
        },
    },
    "Actor": {
        "type": "object",
        "properties": {
            "name": {
                "type": ["string", "null"],
                "description": "a person's name, never an address",
            },
            "email": {"type": ["string", "null"]},
            "url": {"type": ["string", "null"], "format": "uri"},
        },
    },
    "Event": {
        "type": "object",
        "required": EVENT_REQUIRED,
        "properties": {
            "id": {"type": "integer", "description": "monotonic: the cursor to resume from"},
            "source_id": {"type": "string"},
            "kind": {"type": "string", "description": "the source's connector kind"},
            "verb": {"type": "string", "description": "AS2 activity type: Create, Update..."},
            "object_type": {"type": "string", "description": "Article, Note, Message..."},
            "external_id": {"type": "string", "description": "the source's own id for the item"},
            "title": {"type": "string"},
            "summary": {"type": "string", "description": "plain text"},
            "content_html": {"type": "string", "description": "HTML, sanitised at ingest"},
            "url": {"type": ["string", "null"], "format": "uri"},
            "actor": _ref("Actor"),
            "published": {"type": "string", "format": "date-time"},
            "updated": {"type": ["string", "null"], "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "thread_id": {"type": ["string", "null"]},
            "ingested_at": {"type": "string", "format": "date-time"},
            "attachments": {
                "type": "array",
                "description": "enclosures and media: files the item links to",
                "items": _ref("Attachment"),
            },
        },
    },
    "Attachment": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "http(s) only"},
            "type": {"type": ["string", "null"], "description": "media type, e.g. audio/mpeg"},
            "length": {"type": ["integer", "null"], "description": "size in bytes"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next_cursor"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next_cursor": {
                "type": ["integer", "null"],
                "description": "pass as `cursor` for the next page; null on the last",
            },
        },
    },
    "SearchPage": {
        "type": "object",
        "required": ["events", "next_offset"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next_offset": {"type": ["integer", "null"], "minimum": 0},
        },
        "additionalProperties": False,
    },
    "Activity": {
        "type": "object",
        "description": "Activity Streams 2.0 (https://www.w3.org/TR/activitystreams-core/)",
        "required": ["@context", "type", "id", "actor", "object", "published"],
        "properties": {
            "@context": {"const": "https://www.w3.org/ns/activitystreams"},
            "type": {"type": "string", "description": "the event's verb"},
            "id": {"type": "string", "format": "uri"},
            "actor": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["Person", "Service"]},
                    "name": {"type": "string"},
                    "url": {"type": "string", "format": "uri"},
                },
            },
            "object": {
                "type": "object",
                "required": ["type", "published"],
                "properties": {
                    "type": {"type": "string", "description": "the event's object_type"},
                    "id": {"type": "string", "format": "uri"},
                    "url": {"type": "string", "format": "uri"},
                    "name": {"type": "string"},
                    "summary": {"type": "string", "description": "HTML (escaped text)"},
                    "content": {"type": "string", "description": "sanitised HTML"},
                    "mediaType": {"type": "string"},
                    "published": {"type": "string", "format": "date-time"},
                    "updated": {"type": "string", "format": "date-time"},
                    "tag": {"type": "array", "items": {"type": "object"}},
                },
            },
            "published": {"type": "string", "format": "date-time"},
        },
    },
    "Source": {
        "type": "object",
        "required": ["id", "kind", "title"],
        "description": "Members get id, kind and title. Admins (and the setup-mode viewer) "
        "also get the health and configuration fields: errors quote the source's address "
        "and what its server answered, which members are not shown.",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "enabled": {"type": "boolean", "description": "false: an admin turned it off"},
            "last_poll_at": {"type": ["string", "null"], "format": "date-time"},
            "last_success_at": {"type": ["string", "null"], "format": "date-time"},
            "next_poll_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "when it is due; after failures, the retry",
            },
            "last_error": {
                "type": ["string", "null"],
                "description": "the last poll's error, URLs redacted; null after a success",
            },
            "last_warning": {
                "type": ["string", "null"],
                "description": "what the last successful poll could not read (items a "
                "mapping could not map; the others were stored), or null",
            },
            "consecutive_failures": {
                "type": "integer",
                "minimum": 0,
                "description": "polls failed in a row; [poller] alert_after of them raise an alert",
            },
            "disabled_reason": {
                "type": ["string", "null"],
                "description": "why the poller stopped the source (410 Gone): null unless "
                "stopped; it is not polled until an admin resumes it",
            },
            "permanent_redirect": {"type": ["string", "null"]},
            "event_count": {"type": "integer"},
            "events_last_week": {"type": "integer"},
            "audience": {"type": "array", "items": {"type": "string"}},
            "origin": {"enum": ["file", "db"]},
        },
        "additionalProperties": False,  # a new field must be described here first
    },
    "Feeds": {
        "type": "object",
        "description": "absolute personal-feed URLs; they carry the feed token",
        "required": ["atom", "rss", "json"],
        "properties": {
            "atom": {"type": "string", "format": "uri"},
            "rss": {"type": "string", "format": "uri"},
            "json": {"type": "string", "format": "uri"},
        },
    },
    "Stream": {
        "type": "object",
        "required": ["id", "name", "query", "unread", "feeds"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "maxLength": MAX_NAME},
            "query": {"type": "string"},
            "position": {"type": "integer"},
            "last_read_id": {"type": "integer"},
            "unread": {
                "type": ["integer", "null"],
                "maximum": UNREAD_CAP,
                "description": "visible matches above last_read_id, counted up to the cap; "
                "null when the saved query no longer parses",
            },
            "unread_more": {"type": "boolean", "description": "more unread than `unread`"},
            "feeds": _ref("Feeds"),
        },
    },
    "StreamList": {
        "type": "object",
        "required": ["streams", "feeds"],
        "properties": {
            "streams": {"type": "array", "items": _ref("Stream")},
            "feeds": {
                "oneOf": [_ref("Feeds"), {"type": "null"}],
                "description": "the feeds of everything the user may see (`all`)",
            },
        },
    },
    "NewStream": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "query": {"type": "string", "maxLength": MAX_QUERY, "default": ""},
        },
    },
    "StreamChange": {
        "type": "object",
        "minProperties": 1,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "query": {"type": "string", "maxLength": MAX_QUERY},
        },
    },
    "JSONFeed": {
        "type": "object",
        "description": "JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/)",
        "required": ["version", "title", "items"],
        "properties": {
            "version": {"const": "https://jsonfeed.org/version/1.1"},
            "title": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object"}},
        },
    },
}

STREAM_ID = _id_param("stream_id", "a stream of the signed-in user")
NO_STREAM = _error("no such stream (or another user's)")
BAD_STREAM = _error("bad input: `field` names it; a bad query also has `position`")

PATHS: dict[str, Schema] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: 200 while serving",
            "tags": ["operations"],
            "security": [],
            "responses": {"200": _text("ok")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: 200 when the store answers",
            "tags": ["operations"],
            "security": [],
            "responses": {"200": _text("ready"), "503": _text("store unavailable")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (admins, or send an admin's bearer token)",
            "tags": ["operations"],
            "responses": {
                "200": _text("Prometheus text exposition format 0.0.4"),
                "401": {"$ref": "#/components/responses/Unauthenticated"},
                "403": _error("not an admin"),
            },
        }
    },
    "/api/events": {
        "get": {
            "summary": "History, newest first, in pages",
            "tags": ["events"],
            "parameters": [
                _query_param("q", "a stream query", {"type": "string"}),
                _query_param(
                    "cursor",
                    "the `next_cursor` of the previous page (events below this id)",
                    {"type": "integer", "minimum": 0},
                ),
                _query_param(
                    "limit",
                    f"page size, clamped to 1-{MAX_PAGE}",
                    {"type": "integer", "default": 50},
                ),
            ],
            "responses": {
                "200": _json(_ref("EventPage"), "a page of events the viewer may see"),
                "400": _error("bad query, cursor or limit"),
                **ERRORS,
            },
        }
    },
    "/api/events/{event_id}": {
        "get": {
            "summary": "One event",
            "tags": ["events"],
            "parameters": [_id_param("event_id", "the event's id")],
            "responses": {
                "200": _json(_ref("Event"), "the event"),
                "404": _error("no such event, or not visible to the viewer"),
                **ERRORS,
            },
        }
    },
    "/api/events/{event_id}.as2": {
        "get": {
            "summary": "One event as Activity Streams 2.0",
            "tags": ["events"],
            "parameters": [_id_param("event_id", "the event's id")],
            "responses": {
                "200": {
                    "description": "the activity",
                    "content": {"application/activity+json": {"schema": _ref("Activity")}},
                },
                "404": _error("no such event, or not visible to the viewer"),
                **ERRORS,
            },
        }
    },
    "/api/search": {
        "get": {
            "summary": "Full-text search, best match first",
            "tags": ["events"],
            "parameters": [
                _query_param("q", "a stream query; its free text is searched", {"type": "string"}),
                _query_param("limit", "page size", {"type": "integer", "minimum": 1}),
                _query_param("offset", "results to skip", {"type": "integer", "minimum": 0}),
            ],
            "responses": {
                "200": _json(_ref("SearchPage"), "matching events the viewer may see"),
                "400": _error("bad query, limit or offset"),
                **ERRORS,
            },
        }
    },
    "/api/sources": {
        "get": {
            "summary": "The sources the viewer may see",
            "tags": ["sources"],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["sources"],
                        "properties": {"sources": {"type": "array", "items": _ref("Source")}},
                    },
                    "sources",
                ),
                **ERRORS,
            },
        }
    },
    "/api/streams": {
        "get": {
            "summary": "The user's saved streams, in order, with unread counts and feed URLs",
            "tags": ["streams"],
            "responses": {"200": _json(_ref("StreamList"), "the streams"), **ERRORS},
        },
        "post": {
            "summary": "Save a stream (a named query)",
            "tags": ["streams"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("NewStream")}},
            },
            "responses": {
                "201": _json(_ref("Stream"), "the new stream, with its feed URLs"),
                "400": BAD_STREAM,
                **CHANGE_ERRORS,
            },
        },
    },
    "/api/streams/order": {
        "put": {
            "summary": "Reorder the user's streams",
            "tags": ["streams"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["ids"],
                            "properties": {
                                "ids": {
                                    "type": "array",
                                    "items": {"type": "integer"},
                                    "description": "every stream id of the user, once each",
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "204": {"description": "reordered"},
                "400": BAD_STREAM,
                **CHANGE_ERRORS,
            },
        }
    },
    "/api/streams/{stream_id}": {
        "parameters": [STREAM_ID],
        "get": {
            "summary": "One stream",
            "tags": ["streams"],
            "responses": {"200": _json(_ref("Stream"), "the stream"), "404": NO_STREAM, **ERRORS},
        },
        "patch": {
            "summary": "Rename a stream or change its query",
            "tags": ["streams"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("StreamChange")}},
            },
            "responses": {
                "200": _json(_ref("Stream"), "the stream as changed"),
                "400": BAD_STREAM,
                "404": NO_STREAM,
                **CHANGE_ERRORS,
            },
        },
        "delete": {
            "summary": "Delete a stream (its feed URLs stop working)",
            "tags": ["streams"],
            "responses": {"204": {"description": "deleted"}, "404": NO_STREAM, **CHANGE_ERRORS},
        },
    },
    "/api/streams/{stream_id}/read": {
        "parameters": [STREAM_ID],
        "post": {
            "summary": "Mark a stream read up to an event id (it never moves back)",
            "tags": ["streams"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "up_to": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "omitted: all the user may see now",
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["id", "last_read_id"],
                        "properties": {
                            "id": {"type": "integer"},
                            "last_read_id": {"type": "integer"},
                        },
                    },
                    "the stream's last-read id now",
                ),
                "400": BAD_STREAM,
                "404": NO_STREAM,
                **CHANGE_ERRORS,
            },
        },
    },
    "/api/streams.opml": {
        "get": {
            "summary": "OPML 2.0 of the user's streams as Atom feed URLs",
            "tags": ["streams"],
            "responses": {
                "200": {
                    "description": "OPML",
                    "content": {"text/x-opml": {"schema": {"type": "string"}}},
                },
                **ERRORS,
                "403": _error("the setup-mode viewer has no streams"),
            },
        }
    },
    "/api/feed-token/rotate": {
        "post": {
            "summary": "A new personal-feed token: every old feed URL stops working",
            "tags": ["streams"],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["feeds"],
                        "properties": {"feeds": _ref("Feeds")},
                    },
                    "the new URLs of the `all` feeds (GET /api/streams for the others)",
                ),
                **CHANGE_ERRORS,
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This description",
            "tags": ["operations"],
            "responses": {
                "200": _json({"type": "object"}, "OpenAPI 3.1"),
                **ERRORS,
            },
        }
    },
    "/feeds/{token}/{stream}.{format}": {
        "get": {
            "summary": "A personal feed: a stream, or `all`, as Atom, RSS or JSON Feed",
            "description": f"The newest {FEED_SIZE} events the token's user may see that "
            "match the stream. The token in the path is the credential; an unknown or "
            "rotated token, a disabled user and another user's stream all answer 404. "
            "Conditional GET with If-None-Match or If-Modified-Since answers 304.",
            "tags": ["feeds"],
            "security": [],
            "parameters": [
                {
                    "name": "token",
                    "in": "path",
                    "required": True,
                    "description": "the user's feed token (POST /api/feed-token/rotate revokes)",
                    "schema": {"type": "string"},
                },
                {
                    "name": "stream",
                    "in": "path",
                    "required": True,
                    "description": "a stream id of the token's user, or `all`",
                    "schema": {"type": "string", "pattern": "^(all|[0-9]+)$"},
                },
                {
                    "name": "format",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": ["atom", "rss", "json"]},
                },
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
                {
                    "name": "If-Modified-Since",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "the feed",
                    "headers": {
                        "ETag": {"schema": {"type": "string"}},
                        "Last-Modified": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string"}},
                    },
                    "content": {
                        "application/atom+xml": {"schema": {"type": "string"}},
                        "application/rss+xml": {"schema": {"type": "string"}},
                        "application/feed+json": {"schema": _ref("JSONFeed")},
                    },
                },
                "304": {"description": "not modified since the copy the client has"},
                "404": _text("no such feed"),
                "422": _text("the stream's saved query no longer parses"),
            },
        }
    },
    "/hooks/{source_id}": {
        "post": {
            "summary": "A webhook delivery to a source of kind `webhook`",
            "description": "Authenticated per source, never as a user: by the source's "
            "`signature` scheme (GitHub `X-Hub-Signature-256`, GitLab `X-Gitlab-Token`, "
            "a generic HMAC-SHA256 in `X-Signature`, a token in `X-Webhook-Token`, or "
            "`Authorization: Bearer`). The body is JSON (or a form whose `payload` field "
            "is). It is mapped through the source's fields or preset, and answered only "
            "after its events are committed; subscribers get them at once. A delivery id "
            "seen before (in the source's `delivery_header`, by default `X-Delivery-Id`; "
            "without one, a hash of the body) answers `duplicate` and stores nothing. "
            "Refusals are shown on the source's admin page.",
            "tags": ["webhooks"],
            "security": [],
            "parameters": [
                {
                    "name": "source_id",
                    "in": "path",
                    "required": True,
                    "description": "the id of an enabled source of kind `webhook`",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {}},
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"payload": {"type": "string"}},
                        }
                    },
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"enum": ["stored", "ignored", "duplicate", "pong"]},
                            "events": {"type": "array", "items": {"type": "integer"}},
                        },
                    },
                    "committed: `stored` with the new event ids (none when nothing changed), "
                    "`ignored` (the mapping skips it), `duplicate` (a replay), `pong` (a ping)",
                ),
                "400": _error("the body is not JSON"),
                "401": _error("the signature or token is missing or wrong; nothing stored"),
                "404": _error("no enabled webhook source of that id"),
                "408": _error("the body took too long to arrive"),
                "413": _error("the payload is larger than the source's `max_bytes`"),
                "422": _error("the mapping could read no item; `error` names the field"),
                "503": _error("the source's secret cannot be read, or the store is busy"),
            },
        }
    },
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "Tidings",
        "version": "1",
        "summary": "An activity-stream aggregator: history, search, saved streams, feeds",
        "description": "Scripts send `Authorization: Bearer TOKEN` (from `tidings tokens "
        "create`); browsers use the session cookie and send `X-CSRF-Token` on changes. "
        "Once accounts exist every /api path answers 401 without credentials. "
        "See docs/api.md.",
    },
    "security": SIGNED_IN,
    "tags": [
        {"name": "events", "description": "history, single events, search"},
        {"name": "sources", "description": "what the events come from"},
        {"name": "streams", "description": "saved queries, unread counts, feed tokens"},
        {"name": "feeds", "description": "personal Atom, RSS and JSON feeds"},
        {"name": "operations", "description": "probes, metrics, this description"},
        {"name": "webhooks", "description": "deliveries from other systems, per source"},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API token; such requests need no CSRF token",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "tidings_session",
                "description": "a signed-in browser; changes also need the X-CSRF-Token header",
            },
        },
        "responses": {
            "Unauthenticated": {
                "description": "no credentials, or wrong ones (never a redirect)",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        },
    },
}


@guard("user")
async def openapi_json(request: Request) -> Response:
    return JSONResponse(DOCUMENT)
