"""OPML 2.0 subscription lists: import feeds as sources, export sources as feeds.

Shared by `tidings import-opml` / `export-opml` and the web admin. Import makes
web-style sources (origin "db", audited like the admin's), so a list imported
from the command line can be edited in the web admin afterwards.

Parsing is pyexpat, not listparser: only expat tells each outline's line, and
errors name the line (a reader of a 400-feed export needs to find the bad
one). Entity declarations are refused outright, as defusedxml does, so no
DOCTYPE can blow up; expat never fetches external entities.

Folders become tags: an outline with outlines inside and no xmlUrl is a
folder, and its title is a tag of every feed below it, as is each part of a
feed's `category` attribute ("/News/Tax,law" -> "News", "Tax", "law"). Export
writes a source's tags back as `category`, which an import reads again.

Messages show URLs redacted (no user:password, no query string): they go to
the admin page and to the CLI's stderr, where a pasted token must not. Export
writes the URLs whole, since the list must work in another reader, and says
which ones carry a query string or userinfo (`Export.exposed`, and a warning
in the log) so nobody passes the file around unawares.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.parsers import expat

from aggregator.config import parse_source
from aggregator.exceptions import ConfigError, TidingsError
from aggregator.store import Store
from aggregator.store.schema import ALERTS_SOURCE
from aggregator.urls import carries_secrets, redact

log = logging.getLogger(__name__)

MAX_TITLE = 200
MAX_DEPTH = 64  # folders in folders: readers nest a few; thousands would exhaust the stack
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OpmlError(TidingsError):
    """The document as a whole is not an OPML subscription list."""


@dataclass(frozen=True, slots=True)
class Outline:
    """A feed in a subscription list: where it is in the file and what it says."""

    line: int
    url: str
    title: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Problem:
    """An outline that was skipped, and why. A duplicate counts as already
    present, anything else as invalid."""

    line: int
    message: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionList:
    feeds: list[Outline]
    problems: list[Problem]


@dataclass
class _Node:
    name: str
    line: int
    attrs: dict[str, str]  # names lowercased: exporters spell xmlUrl xmlurl too
    children: list[_Node] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.attrs.get(name.lower(), "").strip()


# --- helpers shared with the web admin's forms ---------------------------------


def http_host(url: str) -> str | None:
    """The host of an http(s) URL; None for anything else (a path, file:, junk)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    return parts.hostname or None


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:56].strip("-")


def unique_id(base: str, taken: set[str]) -> str:
    """`base`, or `base-2`, `base-3`…: the first not in `taken` (compared lowercased)."""
    base = base or "source"
    candidate, n = base, 2
    while candidate.lower() in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def url_key(url: str) -> str:
    """What two spellings of one feed URL share: scheme and host lowercased,
    the default port and the fragment dropped, an empty path as "/"."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def audience_problems(audience: Sequence[str]) -> list[str]:
    """What is wrong with `audience` as the audience of new feed sources."""
    probe = {"id": "opml", "kind": "feed", "url": "https://example.org/", "audience": audience}
    try:
        parse_source(probe, "source", "db")
    except ConfigError as err:
        return [p.removeprefix("source.") for p in err.problems]
    return []


# --- parsing -----------------------------------------------------------------------


def _tree(data: bytes) -> _Node:
    """The document as nodes with their line numbers; OpmlError when it is not XML."""
    parser = expat.ParserCreate()
    root = _Node("", 0, {})
    stack = [root]

    def start(name: str, attrs: dict[str, str]) -> None:
        if len(stack) > MAX_DEPTH:
            raise OpmlError(
                f"line {parser.CurrentLineNumber}: elements nested more than {MAX_DEPTH} deep"
            )
        node = _Node(name, parser.CurrentLineNumber, {k.lower(): v for k, v in attrs.items()})
        stack[-1].children.append(node)
        stack.append(node)

    def end(_name: str) -> None:
        stack.pop()

    def no_entities(*_args: Any) -> None:
        raise OpmlError(f"line {parser.CurrentLineNumber}: entity declarations are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = no_entities
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        reason = expat.ErrorString(err.code)
        raise OpmlError(
            f"this is not an OPML subscription list: not well-formed XML "
            f"(line {err.lineno}, column {err.offset + 1}: {reason})"
        ) from None
    return root


def _category_tags(category: str) -> list[str]:
    return [part.strip() for path in category.split(",") for part in path.split("/")]


def _tags(parts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for p in parts if p))  # in order, once each


def parse_opml(data: bytes) -> SubscriptionList:
    """The feeds in an OPML subscription list, and the outlines that are not
    usable feeds, each with its line. Always bytes: never a path or URL to
    open. Raises OpmlError when the document is not an OPML list at all."""
    document = _tree(data)
    root = document.children[0] if document.children else None
    if root is None or root.name != "opml":
        raise OpmlError("this is not an OPML subscription list: its root element is not <opml>")
    body = next((n for n in root.children if n.name == "body"), None)
    if body is None:
        raise OpmlError("the OPML document has no <body>")
    feeds: list[Outline] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}

    def walk(nodes: list[_Node], folders: tuple[str, ...]) -> None:
        for node in nodes:
            if node.name != "outline":
                continue
            url = node.get("xmlUrl")
            title = node.get("title") or node.get("text")
            if not url:
                if node.children:  # a folder: its title tags every feed inside
                    walk(node.children, (*folders, title))
                else:
                    name = f"outline {title!r}" if title else "an outline"
                    problems.append(Problem(node.line, f"{name} has no xmlUrl: not a feed"))
                continue
            if http_host(url) is None:
                problems.append(Problem(node.line, f"xmlUrl {redact(url)!r} is not an http(s) URL"))
            elif (seen := first_line.get(url_key(url))) is not None:
                message = f"{redact(url)} is already on line {seen}; skipped"
                problems.append(Problem(node.line, message, duplicate=True))
            else:
                first_line[url_key(url)] = node.line
                tags = _tags([*folders, *_category_tags(node.get("category"))])
                feeds.append(Outline(node.line, url, title[:MAX_TITLE], tags))
            if node.children:  # rare, but a feed outline may hold more
                walk(node.children, folders)

    walk(body.children, ())
    if not feeds and not problems:
        raise OpmlError("the list names no feeds")
    return SubscriptionList(feeds, problems)


# --- import --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    source_id: str
    outline: Outline


@dataclass
class ImportResult:
    created: list[Created] = field(default_factory=list)
    present: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)


def _known_urls(store: Store, ids: Iterable[str]) -> set[str]:
    keys = set()
    for source_id in ids:
        table = store.source_table(source_id)
        url = table[1].get("url") if table else None
        if isinstance(url, str):
            keys.add(url_key(url))
    return keys


def import_feeds(
    store: Store,
    subscriptions: SubscriptionList,
    *,
    audience: Sequence[str] | None,
    actor: str,
    now: datetime,
    progress: Callable[[], object] | None = None,
) -> ImportResult:
    """Create a `feed` source (origin "db", audited as `actor`) for every feed
    of the list whose URL no source has yet. `audience` None: the feed kind's
    default. `progress` is called once per feed. Synchronous, like the store."""
    result = ImportResult(problems=list(subscriptions.problems))
    for problem in subscriptions.problems:
        if problem.duplicate:
            result.present += 1
        else:
            result.invalid += 1
    ids = [s.id for s in store.source_statuses(viewer=None)]
    # source_statuses leaves out Tidings' own alerts source; its id is taken all the same.
    taken = {i.lower() for i in (*ids, ALERTS_SOURCE)}
    known = _known_urls(store, ids)
    for outline in subscriptions.feeds:
        if url_key(outline.url) in known:
            result.present += 1
        else:
            base = slugify(outline.title) or slugify(http_host(outline.url) or "") or "feed"
            raw: dict[str, Any] = {"id": unique_id(base, taken), "kind": "feed", "url": outline.url}
            if outline.title:
                raw["title"] = outline.title
            if audience is not None:
                raw["audience"] = list(audience)
            if outline.tags:
                raw["tags"] = list(outline.tags)
            try:
                store.create_source(raw, actor=actor, now=now)
            except ConfigError as err:
                reasons = "; ".join(p.removeprefix("source.") for p in err.problems)
                message = f"{redact(outline.url)}: {reasons}"
                result.problems.append(Problem(outline.line, message))
                result.invalid += 1
            else:
                taken.add(raw["id"].lower())
                known.add(url_key(outline.url))
                result.created.append(Created(raw["id"], outline))
        if progress is not None:
            progress()
    result.problems.sort(key=lambda p: p.line)
    return result


# --- export --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    document: bytes
    written: int
    left_out: list[str]  # "id (why)" of each source that is not an http(s) feed
    # Ids of the sources written with a query string or user:password in their
    # URL: often a token, exported as it is because the list must work elsewhere.
    exposed: list[str] = field(default_factory=list)


def export_opml(store: Store, *, now: datetime, title: str = "Tidings sources") -> Export:
    """Every feed source, from the config file and the web admin, as OPML 2.0
    with its tags as `category`. Other kinds, and feeds read from local files,
    have no xmlUrl another reader could use: they are left out, and named.
    URLs are written whole; those with a query string or userinfo are named
    in `exposed` and in a logged warning (the CLI's stderr, the server log)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(now, usegmt=True)
    body = ET.SubElement(root, "body")
    written, left_out, exposed = 0, [], []
    for status in store.source_statuses(viewer=None):
        if status.origin == "system":  # Tidings' own alerts: nobody subscribed to them
            continue
        table = store.source_table(status.id)
        raw = table[1] if table else {}
        url = raw.get("url")
        if status.kind != "feed":
            left_out.append(f"{status.id} (kind {status.kind})")
            continue
        if not isinstance(url, str) or http_host(url) is None:
            left_out.append(f"{status.id} (a local file)")
            continue
        name = status.title or status.id
        attrs = {"type": "rss", "text": name, "title": name, "xmlUrl": url}
        # `category` separates with "," and "/": inside a tag they would split it.
        tags = [str(t).replace(",", " ").replace("/", " ") for t in raw.get("tags") or ()]
        if tags:
            attrs["category"] = ",".join(tags)
        ET.SubElement(body, "outline", attrs)
        written += 1
        if carries_secrets(url):
            exposed.append(status.id)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    document = f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode()
    if exposed:  # names the sources, never the URLs: the log is no place for tokens
        log.warning(
            "OPML export: the URLs of %d sources carry a query string or user:password, "
            "possibly a token, and are written whole (%s); keep the file private",
            len(exposed),
            ", ".join(exposed),
        )
    return Export(document, written, left_out, exposed)
