"""Webhook sources (push): another system POSTs JSON to `/hooks/{source_id}`.

Nothing here does I/O: the web app receives the request (web/hooks.py) and
calls these pure functions to check who sent it, name the delivery and map
the payload to events through the source's `fields` or preset, exactly as a
`jsonapi` source maps a response.

Who sent it (`signature`), against the source's `secret` (env:/file:):

- "github": `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`
  (GitHub, Gitea, Forgejo);
- "gitlab": `X-Gitlab-Token: <the secret>`;
- "hmac": a generic HMAC-SHA256 of the raw body in `X-Signature`, hex (an
  optional "sha256=" prefix) or base64;
- "token": a shared token in `X-Webhook-Token`;
- "bearer": `Authorization: Bearer <the secret>`;
- "none": no check at all, for sources in the config file only (the web app
  refuses it for sources made in the web admin).

`signature_header` renames the header of the first four. Comparisons are
constant-time; the secret and what was sent are never logged or echoed.

A delivery's id, which makes a replay store nothing, is the value of the
header `delivery_header` names (X-GitHub-Delivery; by default X-Delivery-Id);
a delivery without it is named by a hash of its body, so two identical
bodies without an id are one delivery. An event's
identity is the mapped `id`, else the delivery id (`#n` added when one
delivery makes several events).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import Connector, PollContext
from aggregator.exceptions import ParseError, first_line
from aggregator.secrets import SecretRef
from aggregator.types import JSONObject, PollResult
from connectors.mapping import Mapped, MappedOptions

Signature = Literal["github", "gitlab", "hmac", "token", "bearer", "none"]

# The header each scheme reads unless `signature_header` names another.
SIGNATURE_HEADERS: dict[str, str] = {
    "github": "x-hub-signature-256",
    "gitlab": "x-gitlab-token",
    "hmac": "x-signature",
    "token": "x-webhook-token",
    "bearer": "authorization",
}
DEFAULT_DELIVERY_HEADER = "x-delivery-id"
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_BYTES_CAP = 25 * 1024 * 1024  # GitHub's own cap on a payload
MAX_DELIVERY_ID = 200  # the column's size; a longer id is hashed
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")  # an HTTP header name (RFC 9110)


class PayloadError(ParseError):
    """A delivery's body is not a JSON document; the message says why."""


class WebhookOptions(MappedOptions):
    preset_kind = "webhook"

    signature: Signature = Field(
        default="github",
        description="how senders prove who they are: github (X-Hub-Signature-256 HMAC), "
        "gitlab (X-Gitlab-Token), hmac (generic HMAC-SHA256 in X-Signature), "
        "token (X-Webhook-Token), bearer (Authorization: Bearer), or none (config file only)",
    )
    secret: SecretRef | None = Field(
        default=None,
        validate_default=True,
        description="the shared secret (env:NAME or file:PATH); required unless signature = none",
    )
    signature_header: str | None = Field(
        default=None, description="the header holding the signature or token, if not the usual"
    )
    event_header: str | None = Field(
        default=None, description="the header naming the event type (X-GitHub-Event)"
    )
    delivery_header: str | None = Field(
        default=None,
        description="the header with the delivery's unique id (X-GitHub-Delivery); "
        "default X-Delivery-Id, else a hash of the body",
    )
    max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        ge=1024,
        le=MAX_BYTES_CAP,
        description="largest payload accepted, in bytes; larger ones get 413",
    )

    @field_validator("secret")
    @classmethod
    def _secret_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        signature = info.data.get("signature")
        if signature is None:
            return value  # signature itself is invalid: that error is enough
        if value is None and signature != "none":
            raise PydanticCustomError("missing", 'required unless signature = "none"')
        if value is not None and signature == "none":
            raise PydanticCustomError("unused", 'not used with signature = "none"')
        return value

    @field_validator("signature_header", "event_header", "delivery_header")
    @classmethod
    def _header_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _TOKEN.fullmatch(value):
            raise PydanticCustomError("header", "not an HTTP header name")
        if info.field_name == "signature_header" and info.data.get("signature") in (
            "bearer",
            "none",
        ):
            raise PydanticCustomError(
                "unused", "only github, gitlab, hmac and token signatures read a header"
            )
        return value.lower()  # header lookups are case-insensitive

    @property
    def signature_header_name(self) -> str | None:
        """The header the signature check reads (None for "none")."""
        if self.signature == "none":
            return None
        return self.signature_header or SIGNATURE_HEADERS[self.signature]


def verify(
    options: WebhookOptions, secret: str | None, headers: Mapping[str, str], body: bytes
) -> bool:
    """Whether the request proves it comes from the source's sender. `headers`
    is looked up with lower-case names (Starlette's Headers, or a dict)."""
    if options.signature == "none":
        return True
    name = options.signature_header_name
    given = headers.get(name) if name else None
    if not secret or given is None:
        return False
    # As bytes: compare_digest refuses non-ASCII str. Header values arrive as latin-1.
    sent = given.strip().encode("latin-1", "replace")
    key = secret.encode("utf-8")
    if options.signature in ("gitlab", "token"):
        return hmac.compare_digest(sent, key)
    if options.signature == "bearer":
        scheme, _, token = sent.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)
    digest = hmac.new(key, body, hashlib.sha256).digest()
    if options.signature == "github":
        return hmac.compare_digest(sent.lower(), b"sha256=" + digest.hex().encode())
    return _generic_hmac_ok(sent, digest)


def _generic_hmac_ok(sent: bytes, digest: bytes) -> bool:
    """Hex (any case, optional "sha256=") or base64 of the digest."""
    value = sent[7:] if sent[:7].lower() == b"sha256=" else sent
    hex_ok = hmac.compare_digest(value.lower(), digest.hex().encode())
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    return hex_ok | hmac.compare_digest(decoded, digest)  # both compared, whichever matched


def event_type(options: WebhookOptions, headers: Mapping[str, str]) -> str | None:
    """The delivery's event type (what preset rules match on), when the source names a header."""
    if options.event_header is None:
        return None
    value = headers.get(options.event_header)
    return value.strip()[:100] or None if value else None


def delivery_id(options: WebhookOptions, headers: Mapping[str, str], body: bytes) -> str:
    """The sender's id of this delivery; a hash of the body when it sends none."""
    value = headers.get(options.delivery_header or DEFAULT_DELIVERY_HEADER)
    value = value.strip() if value else ""
    if not value:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    if len(value) > MAX_DELIVERY_ID or not value.isprintable():
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    return value


def parse_payload(body: bytes, content_type: str | None) -> Any:
    """The JSON document a delivery carries: the body, or the `payload` field
    of a form (GitHub's "application/x-www-form-urlencoded" content type)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    text: str | bytes = body
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("the form body is not UTF-8 form data") from None
        if "payload" not in fields:
            raise PayloadError("the form has no `payload` field holding the JSON")
        text = fields["payload"][0]
    if not text.strip():
        raise PayloadError("the body is empty; a JSON document was expected")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise PayloadError(f"the body is not JSON: {first_line(err)[:200]}") from None


def map_payload(options: WebhookOptions, doc: Any, *, event: str | None, delivery: str) -> Mapped:
    """The events one payload makes through the source's mapping (raises
    MappingError when `items` selects nothing). An event the mapping gives
    no id is identified by its delivery: a redelivery then stores nothing,
    and two deliveries are two events even with the same title."""
    mapped = options.mapping.map(doc, event=event)
    several = len(mapped.events) > 1
    events = [
        e if e.external_id else replace(e, external_id=f"{delivery}#{n}" if several else delivery)
        for n, e in enumerate(mapped.events, 1)
    ]
    return replace(mapped, events=events)


class WebhookConnector(Connector[WebhookOptions]):
    """Receives, never polls: the poller never claims a push kind."""

    kind = "webhook"
    Options = WebhookOptions
    push = True

    @classmethod
    def carry_state(cls, state: JSONObject | None) -> JSONObject | None:
        """The last payload received outlives a new mapping: it is what an
        admin tests the new mapping on."""
        last = (state or {}).get("last_payload")
        return {"last_payload": last} if isinstance(last, dict) else None

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True)
