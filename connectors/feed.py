"""RSS, Atom, RDF (through feedparser) and JSON Feed sources.

The body is fetched as bytes and handed to feedparser as bytes: given a str it
would treat it as a path or URL. feedparser's own sanitiser is off (nh3 does
that later, once, for every kind) and a DOCTYPE internal subset is stripped
first, so entity expansion cannot blow up. Parsing runs off the event loop.

Credentials are options holding `env:`/`file:` references (aggregator/secrets.py),
resolved at every poll: a missing secret fails that poll with a message naming
the variable or file, and the value itself never reaches a log or an error.

Link-local and cloud-metadata addresses are refused by the fetcher unless the
source sets `allow_link_local`, which only config-file sources may: a poll of
a source made in the web admin with it set fails, whatever the address.
"""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import Connector, ConnectorOptions, PollContext
from aggregator.exceptions import FetchError, ParseError
from aggregator.sanitize import html_to_text
from aggregator.secrets import SecretError, SecretRef
from aggregator.types import Actor, EventData, JSONObject, PollResult
from connectors.files import local_path, read_local
from connectors.http import BasicAuth, BearerAuth, Credentials, fetcher, redact

_DOCTYPE = re.compile(rb"<!doctype", re.IGNORECASE)
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
_JSON_START = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*\{")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_BEARER_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_CREDENTIAL_HEADERS = {
    "authorization": "use token, or username and password, with an env: or file: reference",
    "proxy-authorization": "proxies are not configured per source",
    "cookie": "headers are shown as plain text; use token, or username and password",
    "host": "the Host header comes from url",
}


def _error(message: str) -> PydanticCustomError:
    # The input is never part of the message: it may be a pasted secret.
    return PydanticCustomError("feed_option", message)


class FeedOptions(ConnectorOptions):
    model_config = ConfigDict(hide_input_in_errors=True)  # inputs may be pasted secrets

    url: str = Field(description="http(s) URL, or a file: URL / path for config-file sources")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="extra request headers; shown as plain text, so not for secrets",
    )
    username: str | None = Field(default=None, description="HTTP basic auth user name")
    password: SecretRef | None = Field(
        default=None, validate_default=True, description="HTTP basic auth password reference"
    )
    token: SecretRef | None = Field(
        default=None, validate_default=True, description="bearer token reference"
    )
    allow_link_local: bool = Field(
        default=False,
        description="config-file sources only: may reach link-local and cloud-metadata "
        "addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254), refused otherwise",
    )

    @field_validator("url")
    @classmethod
    def _no_userinfo(cls, url: str) -> str:
        if local_path(url) is None and "@" in urlsplit(url).netloc:
            raise _error("credentials do not belong in the URL: use username and password")
        return url

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise _error(f"{name!r} is not a valid header name")
            if name.lower() in _CREDENTIAL_HEADERS:
                raise _error(f"{name} cannot be set here: {_CREDENTIAL_HEADERS[name.lower()]}")
            if _BAD_HEADER_VALUE.search(value):
                raise _error(f"the value of {name} contains a line break or control character")
        return headers

    @field_validator("username")
    @classmethod
    def _username(cls, username: str | None) -> str | None:
        if username is not None and (not username or ":" in username or not username.isprintable()):
            raise _error("must be non-empty, printable and without ':'")
        return username

    @field_validator("password")
    @classmethod
    def _password(cls, password: str | None, info: ValidationInfo) -> str | None:
        username = info.data.get("username")
        if password is None and username is not None:
            raise _error("required when username is set")
        if password is not None and username is None and "username" in info.data:
            raise _error("needs username")
        return password

    @field_validator("token")
    @classmethod
    def _token(cls, token: str | None, info: ValidationInfo) -> str | None:
        if token is not None and (info.data.get("username") or info.data.get("password")):
            raise _error("give either token or username and password, not both")
        return token

    @field_validator("username", "token")
    @classmethod
    def _network_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("url")
        if value is not None and url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        return value

    @field_validator("allow_link_local")
    @classmethod
    def _network_flag(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")
        if value and url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        return value


class FeedConnector(Connector[FeedOptions]):
    kind = "feed"
    Options = FeedOptions

    async def _credentials(self, ctx: PollContext) -> Credentials | None:
        """Resolved now, not at config load: a rotated secret needs no restart."""
        opts = self.options
        if opts.token is not None:
            token = await ctx.secret(opts.token)
            if not _BEARER_TOKEN.fullmatch(token):
                raise SecretError(f"token {opts.token}: not printable ASCII without spaces")
            return BearerAuth(token)
        if opts.username is not None and opts.password is not None:
            password = await ctx.secret(opts.password)
            return BasicAuth(opts.username, password)
        return None

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        if self.options.allow_link_local and ctx.web_made:
            # Defence in depth: such a source should not have been saved at all.
            raise FetchError(
                "allow_link_local: sources made in the web admin may not reach "
                "link-local addresses; define the source in the config file"
            )
        state = state or {}
        path = local_path(self.options.url)
        if path is not None:
            version, body = await read_local(path, state.get("version"), ctx)
            if body is None:
                return PollResult(not_modified=True)
            parsed = await ctx.run_cpu(parse_feed, body, (ctx.base_dir / path).resolve().as_uri())
            return PollResult(events=parsed.events, state={"version": version})

        http = await fetcher(ctx)
        got = await http.get(
            self.options.url,
            etag=state.get("etag"),
            last_modified=state.get("last_modified"),
            headers=self.options.headers,
            auth=await self._credentials(ctx),
            allow_link_local=self.options.allow_link_local,
        )
        new_state = {"etag": got.etag, "last_modified": got.last_modified}
        if got.not_modified:
            return PollResult(
                not_modified=True,
                min_interval=got.max_age,
                permanent_redirect=got.permanent_redirect,
            )
        parsed = await ctx.run_cpu(parse_feed, got.content, got.url)
        return PollResult(
            events=parsed.events,
            state=new_state,
            min_interval=max(got.max_age or 0, parsed.ttl or 0) or None,
            permanent_redirect=got.permanent_redirect,
        )


def _strip_internal_subset(body: bytes) -> bytes:
    """Drop a DOCTYPE's internal subset (where entity bombs live), in linear time."""
    doctype = _DOCTYPE.search(body, 0, 4096)  # it must come before the root element
    if doctype is None:
        return body
    start = doctype.start()
    bracket, close = body.find(b"[", start), body.find(b">", start)
    if bracket < 0 or 0 <= close < bracket:
        return body  # no internal subset
    end = body.find(b"]", bracket)
    close = body.find(b">", end) if end >= 0 else -1
    return body[:start] + (body[close + 1 :] if close >= 0 else b"")


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    events: list[EventData]
    ttl: float | None = None  # RSS <ttl>, in seconds: poll no more often than this


def parse_feed(body: bytes, url: str) -> ParsedFeed:
    """Items of an RSS/Atom/RDF or JSON Feed document. Module-level so a
    process pool can run it."""
    if _JSON_START.match(body):
        return ParsedFeed(parse_json_feed(body))
    body = _strip_internal_subset(body)
    # No content-location: feedparser would urljoin every link of every entry;
    # _entry resolves only the rare relative one.
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "no feed elements found"
        raise ParseError(f"{redact(url)}: not an RSS/Atom/JSON feed ({reason})")
    ttl = parsed.feed.get("ttl", "")
    return ParsedFeed(
        [_entry(e, url) for e in parsed.entries],
        float(ttl) * 60 if ttl.strip().isdigit() else None,
    )


def _when(value: time.struct_time | None) -> datetime | None:
    return datetime(*value[:6], tzinfo=UTC) if value else None


def _text(detail: Any, fallback: str = "") -> str:
    if not detail:
        return fallback
    value: str = detail.get("value", "")
    return html_to_text(value) if "html" in detail.get("type", "") else value.strip()


def _person_name(name: str | None) -> str | None:
    return name if name and "@" not in name else None


def _link(link: str | None, feed_url: str) -> str | None:
    if not link:
        return None
    return link if _SCHEME.match(link) else urljoin(feed_url, link)


def _entry(e: Any, feed_url: str) -> EventData:
    content = e.get("content")
    content_html = content[0].get("value", "") if content else ""
    summary = e.get("summary", "")
    if not content_html:
        content_html, summary = summary, ""
    author = e.get("author_detail") or {}
    return EventData(
        external_id=e.get("id") or None,
        title=_text(e.get("title_detail"), e.get("title", "")),
        summary=summary,
        content_html=content_html,
        url=_link(e.get("link"), feed_url),
        actor=Actor(
            name=_person_name(author.get("name") or e.get("author")),
            email=author.get("email"),
            url=author.get("href"),
        ),
        # dict.get: feedparser's own get() maps a missing updated to published, with a warning.
        published=_when(dict.get(e, "published_parsed")),
        updated=_when(dict.get(e, "updated_parsed")),
        tags=tuple(t["term"] for t in e.get("tags", ()) if t.get("term")),
    )


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def parse_json_feed(body: bytes) -> list[EventData]:
    """JSON Feed 1.0/1.1, which feedparser does not read. Foreign JSON: every
    field is type-checked, and a field of the wrong type is ignored."""
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise ParseError(f"not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ParseError("not a JSON Feed: no 'items' list")
    feed_author = _first_author(doc)
    out = []
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        item_id = item.get("id")
        tags = item.get("tags")
        out.append(
            EventData(
                external_id=str(item_id) if isinstance(item_id, str | int) else None,
                title=_str(item.get("title")),
                summary=_str(item.get("summary")),
                content_html=_str(item.get("content_html"))
                or _escape_text(_str(item.get("content_text"))),
                url=_str(item.get("url")) or None,
                actor=_json_actor(_first_author(item) or feed_author),
                published=_iso(item.get("date_published")),
                updated=_iso(item.get("date_modified")),
                tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            )
        )
    return out


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _first_author(obj: dict[str, Any]) -> dict[str, Any]:
    """JSON Feed 1.1 `authors` (a list) or 1.0 `author` (one object)."""
    authors = obj.get("authors")
    candidates = authors if isinstance(authors, list) else [obj.get("author")]
    return next((a for a in candidates if isinstance(a, dict)), {})


def _json_actor(author: dict[str, Any]) -> Actor:
    name, url = _person_name(_str(author.get("name")) or None), _str(author.get("url")) or None
    if url and url.startswith("mailto:"):
        return Actor(name=name, email=url[len("mailto:") :])
    return Actor(name=name, url=url)


def _escape_text(text: str) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip())
