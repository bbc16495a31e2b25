"""Feed discovery: the feeds a web page offers.

Given an address, in this order:

1. the address itself, when it answers with a feed (RSS, Atom, JSON Feed);
2. the page's `<link rel="alternate">` elements of a feed type, resolved
   against the page's final URL (after redirects) and its `<base href>`;
3. only when the page declares none: a few common paths on the page's
   origin (/feed, /rss, /atom.xml, …), at most PROBES_AT_ONCE at a time, each
   kept only when it answers with a feed.

Everything goes through the shared Fetcher, so the link-local refusal, the
body cap, the timeouts and the per-host limit apply to every request. No
credentials are sent: declared feeds may live on other hosts, and the fetcher
keeps a source's credentials to its own origin only across redirects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
from selectolax.lexbor import LexborHTMLParser

from aggregator.exceptions import FetchError
from aggregator.sanitize import MAX_DEPTH, nesting_depth
from connectors.feed import defuse_prolog
from connectors.http import Fetcher

FeedType = Literal["rss", "atom", "json"]
Found = Literal["self", "link", "guess"]

# Declared types. Plain application/json is not among them: WordPress marks its
# REST API with rel="alternate" type="application/json" on every page.
LINK_TYPES: dict[str, FeedType] = {
    "application/rss+xml": "rss",
    "application/rdf+xml": "rss",  # RSS 1.0
    "application/atom+xml": "atom",
    "application/feed+json": "json",
}
COMMON_PATHS = ("/feed", "/rss", "/atom.xml", "/feed.xml", "/index.xml", "/rss.xml", "/feed.json")
PROBES_AT_ONCE = 3

_XML_FEED_ROOT = re.compile(
    # Each alternative starts with its own token and a comment cannot end
    # early (`-(?!->)`), so a run of comments splits one way only: linear.
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?"
    rb"(?:<!--(?:[^-]|-(?!->))*-->\s*|<\?[^>]*>\s*|<!DOCTYPE[^>]*>\s*)*"
    rb"<(?:[\w.-]+:)?(?:rss|feed|RDF)\b",
    re.DOTALL,
)
_JSON_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*\{")


@dataclass(frozen=True, slots=True)
class FoundFeed:
    """A feed found for an address. `found`: "self" (the address is the feed),
    "link" (the page declares it) or "guess" (a common path answered with it)."""

    url: str
    type: FeedType
    title: str
    found: Found


def sniff_feed(body: bytes) -> tuple[FeedType, str] | None:
    """(type, title) when `body` is a feed; None for anything else (HTML, say).
    CPU work: run it off the event loop for big bodies."""
    if _JSON_START.match(body):
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, str) and "jsonfeed.org/version/" in version:
            title = doc.get("title")
            return "json", title.strip() if isinstance(title, str) else ""
        return None
    # feedparser reads HTML too, slowly and leniently: only a feed's root element gets it.
    if not _XML_FEED_ROOT.match(body[:4096]):
        return None
    parsed = feedparser.parse(defuse_prolog(body), sanitize_html=False, resolve_relative_uris=False)
    version = str(parsed.get("version") or "")
    if not version:
        return None
    title = str(parsed.feed.get("title") or "").strip()
    return ("atom" if version.startswith("atom") else "rss"), title


def _http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


_BODY = re.compile(rb"<body[\s>]", re.IGNORECASE)


def feed_links(html: bytes, page_url: str) -> list[FoundFeed]:
    """The feeds an HTML page declares with `<link rel="alternate" type=...>`,
    in document order, once each; relative hrefs resolved against the page's
    `<base href>` (itself relative to `page_url`). A link without a title gets
    the page's. Only the head is parsed (the links live there), and not
    even that when it nests deeper than any real page: parsers are
    quadratic in nesting."""
    body = _BODY.search(html)
    head = html[: body.start()] if body else html
    if nesting_depth(head.decode("utf-8", "replace"), MAX_DEPTH) > MAX_DEPTH:
        return []
    tree = LexborHTMLParser(head, encoding=True)
    base = page_url
    base_node = tree.css_first("base[href]")  # only the first counts, as in browsers
    if base_node is not None:
        href = (base_node.attributes.get("href") or "").strip()
        if href:
            base = urljoin(page_url, href)
    title_node = tree.css_first("title")
    page_title = " ".join((title_node.text() if title_node else "").split())
    found: dict[str, FoundFeed] = {}
    for link in tree.css("link[rel][href][type]"):
        attrs = link.attributes
        if "alternate" not in (attrs.get("rel") or "").lower().split():
            continue
        mime = (attrs.get("type") or "").partition(";")[0].strip().lower()
        feed_type = LINK_TYPES.get(mime)
        href = (attrs.get("href") or "").strip()
        if feed_type is None or not href:
            continue
        url = urljoin(base, href).partition("#")[0]
        if not _http(url) or url in found:
            continue  # javascript:, data:, a mangled href…
        title = " ".join((attrs.get("title") or "").split()) or page_title
        found[url] = FoundFeed(url, feed_type, title, "link")
    return list(found.values())


def _read_page(body: bytes, url: str) -> FoundFeed | list[FoundFeed]:
    """The page as a feed, else the feeds it declares (both CPU work, off the loop)."""
    sniffed = sniff_feed(body)
    if sniffed is not None:
        return FoundFeed(url, sniffed[0], sniffed[1], "self")
    return feed_links(body, url)


RunCpu = Callable[..., Awaitable[Any]]


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def _probe(
    fetcher: Fetcher, page_url: str, headers: Mapping[str, str], run_cpu: RunCpu
) -> list[FoundFeed]:
    parts = urlsplit(page_url)
    origin = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
    slots = asyncio.Semaphore(PROBES_AT_ONCE)

    async def probe(path: str) -> tuple[FoundFeed, bytes] | None:
        async with slots:
            try:
                got = await fetcher.get(origin + path, headers=headers)
            except FetchError:
                return None  # a 404 is the usual answer: not a finding
        sniffed = await run_cpu(sniff_feed, got.content)
        if sniffed is None:
            return None
        return FoundFeed(got.url, sniffed[0], sniffed[1], "guess"), got.content

    answers = await asyncio.gather(*(probe(path) for path in COMMON_PATHS))
    found: list[FoundFeed] = []
    seen: set[str] = set()
    for answer in answers:
        if answer is None:
            continue
        feed, body = answer
        # /feed redirecting to /feed/, or /rss serving /feed's bytes: one feed.
        digest = hashlib.sha256(body).hexdigest()
        if feed.url in seen or digest in seen:
            continue
        seen.update((feed.url, digest))
        found.append(feed)
    return found


async def discover(
    fetcher: Fetcher,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    run_cpu: RunCpu = _in_thread,
) -> list[FoundFeed]:
    """The feeds `url` is or offers; [] when none. Raises FetchError when
    `url` itself cannot be fetched (the message names it and why). Parsing
    runs through `run_cpu` (a thread by default; a server passes its parser
    pool, whose tasks have a time budget: feedparser has quadratic corners)."""
    headers = dict(headers or {})
    page = await fetcher.get(url, headers=headers)
    read: FoundFeed | list[FoundFeed] = await run_cpu(_read_page, page.content, page.url)
    if isinstance(read, FoundFeed):
        return [read]
    if read:
        return read
    return await _probe(fetcher, page.url, headers, run_cpu)
