"""The `statuspage` kind: incidents from a Statuspage-style JSON API.

Reads the shape of Atlassian Statuspage's `/api/v2/incidents.json`:

    {"incidents": [{"id": "...", "name": "...", "status": "investigating",
                    "created_at": "...", "updated_at": "...", "shortlink": "...",
                    "incident_updates": [{"body": "..."}]}]}

One event per incident. Its id is the incident's id, so a change of status
or a new update becomes an `Update` event of the same incident in Tidings.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from aggregator.connector import Connector, ConnectorOptions, PollContext
from aggregator.exceptions import ParseError
from aggregator.types import EventData, JSONObject, PollResult
from connectors.http import fetcher
from connectors.mapping import parse_time


class StatusPageOptions(ConnectorOptions):
    """The keys of a `kind = "statuspage"` source, besides the common ones
    (id, interval, audience...). Unknown keys are errors."""

    url: str = Field(description="the incidents endpoint: https://HOST/api/v2/incidents.json")
    resolved: bool = Field(default=True, description="also report resolved incidents")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return url


class StatusPageConnector(Connector[StatusPageOptions]):
    kind = "statuspage"
    Options = StatusPageOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        state = state or {}
        http = await fetcher(ctx)  # the shared, pooled fetcher
        got = await http.get(
            self.options.url, etag=state.get("etag"), last_modified=state.get("last_modified")
        )
        if got.not_modified:  # HTTP 304: keep the old state
            return PollResult(not_modified=True, min_interval=got.max_age)
        # Parsing is CPU work: off the event loop, in the parser pool.
        events, skipped = await ctx.run_cpu(parse, got.content, self.options.resolved)
        warning = f"left out {skipped} incident(s) without an id or a name" if skipped else None
        return PollResult(
            events=events,
            state={"etag": got.etag, "last_modified": got.last_modified},
            min_interval=got.max_age,
            permanent_redirect=got.permanent_redirect,
            warning=warning,
        )


def parse(body: bytes, resolved: bool) -> tuple[list[EventData], int]:
    """The incidents in `body`, and how many had to be left out.

    Module level and picklable: it runs in another process. Raises
    ParseError with a message an admin can act on."""
    try:
        doc = json.loads(body)
    except ValueError as err:  # UnicodeDecodeError included
        raise ParseError(f"not JSON: {err}") from None
    incidents = doc.get("incidents") if isinstance(doc, dict) else None
    if not isinstance(incidents, list):
        raise ParseError('expected an object with an "incidents" list')
    events: list[EventData] = []
    skipped = 0
    for incident in incidents:
        event = _event(incident)
        if event is None:
            skipped += 1
        elif resolved or "resolved" not in event.tags:
            events.append(event)
    if incidents and skipped == len(incidents):
        raise ParseError(f"none of the {skipped} incidents has an id and a name")
    return events, skipped


def _event(incident: Any) -> EventData | None:
    if not isinstance(incident, dict):
        return None
    ident, name = incident.get("id"), incident.get("name")
    if not isinstance(ident, str) or not ident or not isinstance(name, str):
        return None  # without an id Tidings would guess one, and duplicate it later
    status = _text(incident.get("status"))
    updates = incident.get("incident_updates")
    latest = updates[0] if isinstance(updates, list) and updates else {}  # newest first
    body = _text(latest.get("body")) if isinstance(latest, dict) else ""
    return EventData(
        external_id=ident,
        title=name,
        summary=f"{status}: {body}" if status and body else status or body,
        url=_text(incident.get("shortlink")) or None,
        published=parse_time(incident.get("created_at")),  # None: dated when first seen
        updated=parse_time(incident.get("updated_at")),
        object_type="Note",
        tags=(status,) if status else (),
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
