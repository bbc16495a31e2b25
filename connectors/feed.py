"""RSS, Atom, RDF (through feedparser) and JSON Feed sources.

The body is fetched as bytes and handed to feedparser as bytes: given a str it
would treat it as a path or URL. feedparser's own sanitiser is off (nh3 does
that later, once, for every kind) and a DOCTYPE internal subset is stripped
first, so entity expansion cannot blow up. Parsing runs off the event loop.
How encodings, relative URLs, attachments, authors, dates, polling hints and
each entry's identity are settled is in docs/connectors.md, "Feeds".

Credentials are options holding `env:`/`file:` references (aggregator/secrets.py),
resolved at every poll: a missing secret fails that poll with a message naming
the variable or file, and the value itself never reaches a log or an error.

Link-local and cloud-metadata addresses are refused by the fetcher unless the
source sets `allow_link_local`, which only config-file sources may: a poll of
a source made in the web admin with it set fails, whatever the address.
"""

from __future__ import annotations

import calendar
import codecs
import contextlib
import html
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from aggregator.connector import Connector, PollContext
from aggregator.decide import carried_identity, settle_identities
from aggregator.exceptions import ParseError
from aggregator.sanitize import html_to_text
from aggregator.types import Actor, EventData, JSONObject, PollResult
from connectors.files import local_path, read_local
from connectors.http import fetcher, redact
from connectors.httpsource import HttpSourceOptions, refuse_web_link_local, request_args
from connectors.mapping import parse_time

_ELEMENT = re.compile(rb"<\w")  # where feedparser's prolog ends
_PROLOG_KEEP = re.compile(rb"<\?xml\b[^>]*\?>|<!DOCTYPE[^\[>]*>", re.IGNORECASE)
# UTF-32 LE's byte-order mark starts with UTF-16 LE's: longest first.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_WIDE_STARTS = {  # "<?" (or "<?xm") without a byte-order mark, as XML 1.0's appendix F
    b"\x00\x00\x00<": "utf-32-be",
    b"<\x00\x00\x00": "utf-32-le",
    b"\x00<\x00?": "utf-16-be",
    b"<\x00?\x00": "utf-16-le",
    b"\x4c\x6f\xa7\x94": "cp037",  # EBCDIC
}
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
_JSON_START = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*\{")
# UTF-32 LE's byte-order mark starts with UTF-16 LE's.
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)
_XML_ENCODING = re.compile(rb"""\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([^"'>]*)""")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
_SY_PERIODS = {  # the RSS 1.0 syndication module's sy:updatePeriod, in seconds
    "hourly": 3600,
    "daily": 86400,
    "weekly": 7 * 86400,
    "monthly": 30 * 86400,
    "yearly": 365 * 86400,
}
_EMAIL = re.compile(r"""(?:mailto:)?([^\s<>()\[\]@,;:"']+@[^\s<>()\[\]@,;:"']+)""", re.IGNORECASE)
MAX_NAME = 256  # characters of an author's name (and address) looked at
_NAME_PUNCTUATION = " \t<>()[]\"',;:"  # left around a name once its address is gone
# The rules items are read by, kept in each poll's state as "rules" (a state
# without it was written under rules 1). Bump it with every change to parsing
# that alters what content_hash covers (title, summary, content, link, author,
# tags): the first poll under new rules then rebaselines (PollResult) instead
# of announcing each changed item as an Update. 2: the feed's author for an
# entry without one, addresses moved out of names.
RULES = 2


class FeedOptions(HttpSourceOptions):
    """A feed: an http(s) URL, or a local file for config-file sources."""


class FeedConnector(Connector[FeedOptions]):
    kind = "feed"
    Options = FeedOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        refuse_web_link_local(self.options, ctx)
        # Items stored under older rules hash differently now (a new source
        # has none stored): this poll takes the new hashes in without Updates.
        rebaseline = state is not None and _rules(state) != RULES
        state = state or {}
        # A rebaseline fetches afresh: a 304 would put it off until the feed
        # changes, and edits made by then would be taken in silently.
        cached = {} if rebaseline else state
        path = local_path(self.options.url)
        if path is not None:
            version, body = await read_local(path, cached.get("version"), ctx)
            if body is None:
                return PollResult(not_modified=True)
            parsed = await ctx.run_cpu(parse_feed, body, (ctx.base_dir / path).resolve().as_uri())
            events, identity = settle_identities(parsed.events, state)
            return PollResult(
                events=events,
                state={"version": version, **identity, "rules": RULES},
                rebaseline=rebaseline,
            )

        http = await fetcher(ctx)
        got = await http.get(
            self.options.url,
            etag=cached.get("etag"),
            last_modified=cached.get("last_modified"),
            **await request_args(self.options, ctx),
        )
        if got.not_modified:
            return PollResult(
                not_modified=True,
                min_interval=got.max_age,
                permanent_redirect=got.permanent_redirect,
            )
        parsed = await ctx.run_cpu(parse_feed, got.content, got.url, got.content_type)
        events, identity = settle_identities(parsed.events, state)
        return PollResult(
            events=events,
            state={
                "etag": got.etag,
                "last_modified": got.last_modified,
                **identity,
                "rules": RULES,
            },
            min_interval=max(got.max_age or 0, parsed.min_interval or 0) or None,
            permanent_redirect=got.permanent_redirect,
            rebaseline=rebaseline,
        )

    @classmethod
    def carry_state(cls, state: JSONObject | None) -> JSONObject | None:
        """The identity scheme and carried ids, or a source on "link" or "hash"
        would announce its window again under guids after a new URL; and the
        rules marker, whose absence from a state carried from an older
        connector still means a rebaseline: a state from an older connector
        carries its (older) rules number, so its next poll still rebaselines."""
        if state is None:
            return None
        return {**carried_identity(state), "rules": _rules(state)}


def _rules(state: JSONObject) -> int:
    """The parsing rules a source's stored items were read by (RULES)."""
    rules = state.get("rules", 1)
    return rules if type(rules) is int else 1


def defuse_prolog(body: bytes) -> bytes:
    """The document with its prolog (what comes before the first element)
    cut down to the XML declaration and a DOCTYPE without internal subset.

    feedparser re-declares every entity it finds there whose value has no
    `&` ("safe") and expands it: one 10,000-character entity referenced
    10,000 times is 100 MB of title (a quadratic blow-up), wherever in the
    prolog it hides (after a long comment, say). Nothing else in a prolog
    matters to a feed. The prolog ends where feedparser's does: at the first
    `<` followed by a word character. Linear in the size of the prolog."""
    root = _ELEMENT.search(body)
    end = root.start() if root else len(body)
    if b"<!" not in body[:end]:
        return body  # no DOCTYPE, entity or comment: nothing to cut
    kept = _PROLOG_KEEP.findall(body, 0, end)
    return b"\n".join(kept) + b"\n" + body[end:]


def _ascii_compatible(body: bytes) -> bytes:
    """UTF-16, UTF-32 and EBCDIC documents as UTF-8, so that their prolog
    reads as bytes (defuse_prolog) the way feedparser will read it."""
    for bom, codec in _WIDE_BOMS:
        if body.startswith(bom):
            return _as_utf8(body.decode(codec, "replace"))
    sniffed = _WIDE_STARTS.get(body[:4])
    return _as_utf8(body.decode(sniffed, "replace")) if sniffed else body


def _as_utf8(text: str) -> bytes:
    """`text` as UTF-8, its XML declaration saying so."""
    data = text.removeprefix("\ufeff").encode("utf-8")
    declared = _XML_ENCODING.match(data)
    return data[: declared.start(1)] + b"utf-8" + data[declared.end(1) :] if declared else data


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    events: list[EventData]
    # Seconds: poll no more often than this (RSS <ttl>, sy:updatePeriod/Frequency).
    min_interval: float | None = None


def parse_feed(body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    """Items of an RSS/Atom/RDF or JSON Feed document fetched from `url`
    (with this Content-Type, when fetched over HTTP). Module-level so a
    process pool can run it."""
    if _JSON_START.match(body):
        return ParsedFeed(parse_json_feed(body, url))
    body = _settle_encoding(defuse_prolog(_ascii_compatible(body)), content_type)
    # No content-location: feedparser would urljoin every link of every entry
    # against it; element links come back resolved against xml:base only, and
    # _absolute resolves the rare relative one that is left.
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "no feed elements found"
        raise ParseError(f"{redact(url)}: not an RSS/Atom/JSON feed ({reason})")
    feed = parsed.feed
    base = _base_url(url, feed.get("link"))
    author = _actor(feed.get("author_detail"), feed.get("author"), base)
    # feedparser gives an Atom link without a type "text/html": no enclosure's.
    invented = "text/html" if parsed.get("version", "").startswith("atom") else None
    events = [_entry(e, base, author, invented) for e in parsed.entries]
    return ParsedFeed(events, _min_interval(feed))


def _settle_encoding(body: bytes, content_type: str | None) -> bytes:
    """The body, made so that feedparser decodes it right.

    A byte-order mark is believed (feedparser reads it). Otherwise bytes that
    are valid UTF-8 are UTF-8 whatever the XML declaration says: a wrong
    declaration is common, text in another encoding that happens to be valid
    UTF-8 is not (Miniflux's rule). Bytes that are not UTF-8 and declare
    nothing are decoded with the HTTP charset when there is one; failing all
    that, feedparser tries the declaration, UTF-8, then windows-1252."""
    if body.startswith(_BOMS):
        return body
    declared = _XML_ENCODING.match(body)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        charset = _CHARSET.search(content_type or "")
        # (NULs up front: UTF-16 or UTF-32 without a BOM, which feedparser sniffs.)
        if declared is None and charset and b"\x00" not in body[:4]:
            with contextlib.suppress(LookupError, UnicodeDecodeError):
                return body.decode(charset.group(1)).encode("utf-8")
        return body
    if declared and declared.group(1).strip().lower() not in (b"utf-8", b"utf8"):
        return body[: declared.start(1)] + b"utf-8" + body[declared.end(1) :]
    return body


def _min_interval(feed: Any) -> float | None:
    """The feed's own lower bound on polling, in seconds: the larger of RSS
    <ttl> (minutes) and the syndication module's period / frequency."""
    hints = []
    ttl = str(feed.get("ttl") or "").strip()
    if ttl.isdigit():
        hints.append(float(ttl) * 60)
    period = _SY_PERIODS.get(str(feed.get("sy_updateperiod") or "").strip().lower())
    if period:
        frequency = str(feed.get("sy_updatefrequency") or "").strip()
        hints.append(period / (int(frequency) if frequency.isdigit() and int(frequency) else 1))
    return max(hints, default=None)


def _base_url(feed_url: str, site: str | None) -> str:
    """What relative links resolve against when no xml:base says otherwise:
    the feed's own URL; for a local file, the site it links to (a file: link
    is no use in a browser)."""
    if _is_web(feed_url) or not site:
        return feed_url
    site = _absolute(site, feed_url)
    return site if site and _is_web(site) else feed_url


def _is_web(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _absolute(link: Any, base: str) -> str | None:
    text = link.strip() if isinstance(link, str) else ""
    if not text:
        return None
    if _SCHEME.match(text):
        return text
    try:
        return urljoin(base, text)
    except ValueError:  # e.g. "//[x": not a link anyone can follow
        return None


def _when(value: time.struct_time | None) -> datetime | None:
    """feedparser's UTC struct_time as a datetime; None when it is no date
    (the event then dates from when it was first seen)."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)  # a leap second rolls over
    except (OverflowError, ValueError, OSError):
        return None


def _title(e: Any) -> str:
    """The entry's title as text. Its value from `title`: `title_detail` can
    hold a nested element's title (an Atom entry's <image><title>)."""
    value = str(e.get("title") or "")
    detail = e.get("title_detail") or {}
    return html_to_text(value) if "html" in detail.get("type", "") else value.strip()


def _actor(detail: Any, text: Any, base: str) -> Actor:
    """A person from author fields. The name is never an address: one found in
    it moves to `email` ("Jane Doe <jane@example.org>", a bare address), a web
    address given as the name to `url` ("editor@e.org (https://e.org/about)")."""
    detail = detail or {}
    # A name is short; a 40 KB one made the address search below take 12 s.
    name = str(detail.get("name") or text or "")[:MAX_NAME]
    email, url = detail.get("email") or None, _absolute(detail.get("href"), base)
    found = _EMAIL.search(name) if "@" in name else None
    if found:
        email = email or found.group(1)
        name = _EMAIL.sub(" ", name).strip(_NAME_PUNCTUATION)
    name = " ".join(name.split())
    if _is_web(name) and " " not in name:
        url, name = url or name, ""
    return Actor(name=name or None, email=email, url=url)


def _entry(e: Any, base: str, feed_author: Actor, invented_type: str | None) -> EventData:
    content = e.get("content")
    detail = content[0] if content else e.get("summary_detail") or {}
    content_html = content[0].get("value", "") if content else ""
    summary = e.get("summary", "")
    if not content_html:
        content_html, summary = summary, ""
    url = _absolute(e.get("link"), base)
    actor = _actor(e.get("author_detail"), e.get("author"), base)
    return EventData(
        external_id=(e.get("id") or "").strip() or None,
        title=_title(e),
        summary=summary,
        content_html=content_html,
        url=url,
        actor=actor if actor != Actor() else feed_author,
        # dict.get: feedparser's own get() maps a missing updated to published, with a warning.
        published=_when(dict.get(e, "published_parsed")),
        updated=_when(dict.get(e, "updated_parsed")),
        tags=tuple(t for t in ((t.get("term") or "").strip() for t in e.get("tags", ())) if t),
        extra=_extra(_media(e, invented_type), base, url, _absolute(detail.get("base"), base)),
    )


def _media(e: Any, invented_type: str | None) -> list[tuple[Any, Any, Any]]:
    """(url, type, length) of each enclosure (RSS <enclosure>, Atom
    rel="enclosure"), media:content and media:thumbnail, in that order."""
    found = []
    for m in e.get("enclosures", ()):
        kind = m.get("type")
        found.append((m.get("href"), None if kind == invented_type else kind, m.get("length")))
    found += [(m.get("url"), m.get("type"), m.get("filesize")) for m in e.get("media_content", ())]
    found += [(m.get("url"), None, None) for m in e.get("media_thumbnail", ())]
    return found


def _extra(
    media: list[tuple[Any, Any, Any]], base: str, url: str | None, xml_base: Any
) -> JSONObject:
    """An entry's attachments and, when it is not the entry's link, the base
    its content's relative URLs resolve against: xml:base, else the link,
    else the feed's own base."""
    extra: JSONObject = {}
    attachments = [
        {"url": link, "type": _str(kind).strip() or None, "length": _length(length)}
        for link, kind, length in ((_absolute(h, base), k, n) for h, k, n in media)
        if link
    ]
    if attachments:
        extra["attachments"] = attachments
    content_base = xml_base or url or base
    if content_base != url:
        extra["content_base"] = content_base
    return extra


def _length(value: Any) -> int | None:
    """A size in bytes; "0", empty and junk mean unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    text = _str(value).strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _iso(value: Any) -> datetime | None:
    """An RFC 3339 date, or the RFC 822 kind some JSON feeds carry."""
    return parse_time(value) if isinstance(value, str) else None


def parse_json_feed(body: bytes, url: str) -> list[EventData]:
    """JSON Feed 1.0/1.1, which feedparser does not read. Foreign JSON: every
    field is type-checked, a field of the wrong type is ignored, and an item
    that is not an object is skipped."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:  # JSON is UTF-8; windows-1252 is the last resort, as for XML
        text = body.decode("windows-1252", "replace")
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ParseError(f"{redact(url)}: not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ParseError(f"{redact(url)}: not a JSON Feed: no 'items' list")
    base = _base_url(url, _str(doc.get("home_page_url")))
    feed_author = _json_actor(_first_author(doc), base)
    out = []
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        item_id = item.get("id")
        guid = str(item_id).strip() if type(item_id) in (str, int) else ""  # not a bool
        tags = item.get("tags")
        link = _absolute(item.get("url"), base)
        actor = _json_actor(_first_author(item), base)
        media = [
            (a.get("url"), a.get("mime_type"), a.get("size_in_bytes"))
            for a in _list(item.get("attachments"))
            if isinstance(a, dict)
        ]
        if item.get("image"):
            media.append((item.get("image"), None, None))
        out.append(
            EventData(
                external_id=guid or None,
                title=_str(item.get("title")).strip(),
                summary=_str(item.get("summary")),
                content_html=_str(item.get("content_html"))
                or _escape_text(_str(item.get("content_text"))),
                url=link,
                actor=actor if actor != Actor() else feed_author,
                published=_iso(item.get("date_published")),
                updated=_iso(item.get("date_modified")),
                tags=tuple(t.strip() for t in _list(tags) if isinstance(t, str) and t.strip()),
                extra=_extra(media, base, link, None),
            )
        )
    return out


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _first_author(obj: dict[str, Any]) -> dict[str, Any]:
    """JSON Feed 1.1 `authors` (a list) or 1.0 `author` (one object)."""
    authors = obj.get("authors")
    candidates = authors if isinstance(authors, list) else [obj.get("author")]
    return next((a for a in candidates if isinstance(a, dict)), {})


def _json_actor(author: dict[str, Any], base: str) -> Actor:
    name, url = _str(author.get("name")), _str(author.get("url")) or None
    if url and url.lower().startswith("mailto:"):
        return _actor({"name": name, "email": url[len("mailto:") :]}, None, base)
    return _actor({"name": name, "href": url}, None, base)


def _escape_text(text: str) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip())
