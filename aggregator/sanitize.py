"""Every foreign HTML field goes through nh3 (ammonia) before it is stored.

The allowlist follows Miniflux: formatting, links, images, tables, code; no
script, style, forms, iframes or event handlers. Links get
rel="noopener noreferrer" and relative URLs are resolved against the entry's
own link. 1x1 tracking pixels are dropped and lazy `data-src` images fixed.
"""

from __future__ import annotations

import html
import re
from contextvars import ContextVar
from urllib.parse import urljoin, urlsplit

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "details",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small",
    "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "time", "tr", "u", "ul",
}  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title", "width", "height"},  # no srcset: nh3 does not filter it
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "time": {"datetime"},
    "ol": {"start"},
    "blockquote": {"cite"},
}
SCHEMES = {"http", "https", "mailto", "tel"}
DROP_WITH_CONTENT = {"script", "style", "noscript", "template", "iframe", "object", "embed"}

# Linear on hostile input: an <img> tag ends at the next < or >, and the checks
# below look inside one (short) tag at a time.
_IMG_TAG = re.compile(r"<img\b[^<>]*+>", re.IGNORECASE)
_ONE_PIXEL = re.compile(r"""\b(width|height)\s*=\s*["']?1(?![0-9])""", re.IGNORECASE)
_DATA_SRC = re.compile(r"\bdata-src\s*=", re.IGNORECASE)
_HAS_SRC = re.compile(r"\ssrc\s*=", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_URL_BREAKS = re.compile(r"[\t\n\r]")  # a URL parser drops them (WHATWG)
_URL_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_PARTIAL_TAG = re.compile(r"<[^>]*\Z")
_DROP_BLOCKS = re.compile(
    r"<(script|style|noscript|template|iframe|object)\b.*?</\1\s*>|<!--.*?-->",
    re.IGNORECASE | re.DOTALL,
)


def _fix_image(match: re.Match[str]) -> str:
    tag = match.group(0)
    if len({m.group(1).lower() for m in _ONE_PIXEL.finditer(tag)}) == 2:
        return ""  # a 1x1 tracking pixel
    if _DATA_SRC.search(tag) and not _HAS_SRC.search(tag):
        return _DATA_SRC.sub("src=", tag, count=1)  # a lazy image that never loads here
    return tag


def _resolve_relative(url: str) -> str | None:
    """nh3 calls this only for relative URLs: resolve against the entry being
    cleaned, or drop them when it has no web address (they would point into
    Tidings itself)."""
    base = _BASE_URL.get()
    try:
        return urljoin(base, url) if base else None
    except ValueError:  # a malformed URL in foreign HTML: drop it
        return None


# One Cleaner for everything: building one costs about twice a typical clean.
# The entry's own link reaches the resolver through a context variable.
_BASE_URL: ContextVar[str | None] = ContextVar("sanitize_base_url", default=None)
_CLEANER = nh3.Cleaner(
    tags=TAGS,
    clean_content_tags=DROP_WITH_CONTENT,
    attributes=ATTRIBUTES,
    url_schemes=SCHEMES,
    link_rel="noopener noreferrer",
    url_relative=_resolve_relative,
)


def safe_url(url: str | None) -> str | None:
    """A link fit to put in a page: http(s) or mailto only, else None. Control
    characters are percent-encoded, as a browser would, so that the link can go
    into XML (which has no way to write them) as it is."""
    if not url:
        return None
    url = _URL_BREAKS.sub("", url.strip())
    url = _URL_CONTROLS.sub(lambda m: f"%{ord(m.group()):02X}", url)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. "http://[::1": not a link anyone can follow
        return None
    return url if scheme in ("http", "https", "mailto") else None


def _is_absolute(url: str | None) -> bool:
    """An http(s) URL relative links can be resolved against."""
    safe = safe_url(url)
    return safe is not None and not safe.lower().startswith("mailto:")


MAX_DEPTH = 1_000  # element nesting; real pages stay under 30 (the html corpus's deepest: 25)
MAX_DEEP_TEXT = 10_000  # characters kept of content nested deeper than that

# The nesting estimate before parsing (nesting_depth).
_OPEN_TAG = re.compile(r"<(/?)([a-zA-Z][^\s/>\x00]*)|<!--")
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed",
                       "noframes"})  # fmt: skip
# Void elements, and those a parser closes by itself when the next one opens
# (a page of 10,000 unclosed <p> or <a name> is not 10,000 deep).
_FLAT = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr", "param", "keygen", "frame", "basefont", "bgsound", "image", "p", "li",
    "dd", "dt", "td", "th", "tr", "tbody", "thead", "tfoot", "option", "optgroup", "rb",
    "rp", "rt", "rtc", "colgroup", "caption", "html", "head", "body", "a", "nobr", "button",
    "form",
})  # fmt: skip
_FOREIGN = frozenset({"svg", "math"})  # where <x/> closes itself


def nesting_depth(text: str, limit: int) -> int:
    """About how deep the page's elements nest, counted up to just past
    `limit`, in one pass over its tags without building a tree. Raw text
    (scripts, styles, comments) is skipped; elements a parser closes itself
    (_FLAT) are not counted, nor `<x/>` inside SVG and MathML."""
    stack: list[str] = []
    counts: dict[str, int] = {}
    deepest = foreign = pos = 0
    while pos >= 0 and deepest <= limit and (tag := _OPEN_TAG.search(text, pos)) is not None:
        pos = tag.end()
        name = (tag.group(2) or "").lower()
        if not name:  # a comment
            pos = text.find("-->", pos)
        elif tag.group(1):  # an end tag closes what is open above its element
            while counts.get(name):
                top = stack.pop()
                counts[top] -= 1
                foreign -= top in _FOREIGN
                if top == name:
                    break
        elif name in _RAW_TEXT:
            end = re.compile(f"</{name}", re.IGNORECASE).search(text, pos)
            pos = end.end() if end else -1
        elif name == "plaintext":  # the rest is text
            pos = -1
        elif name not in _FLAT and not ((foreign or name in _FOREIGN) and _self_closing(text, pos)):
            stack.append(name)
            counts[name] = counts.get(name, 0) + 1
            foreign += name in _FOREIGN
            deepest = max(deepest, len(stack))
    return deepest


def _self_closing(text: str, pos: int) -> bool:
    end = text.find(">", pos)
    return end > 0 and text[end - 1] == "/"


def sanitize_html(fragment: str, base_url: str | None = None) -> str:
    """Safe HTML to put in a page. Relative URLs resolve against `base_url`
    (dropped when there is none: they would point into Tidings itself)."""
    if not fragment:
        return ""
    if fragment.count("<") > MAX_DEPTH and nesting_depth(fragment, MAX_DEPTH) > MAX_DEPTH:
        # nh3 (like any HTML parser) is quadratic in nesting: 200,000 nested
        # <div>s would take minutes. Nothing that deep is prose: keep its text.
        text = _TAG.sub(" ", _DROP_BLOCKS.sub(" ", fragment))
        text = " ".join(html.unescape(text).split())[:MAX_DEEP_TEXT]
        return f"<p>{html.escape(text)}</p>"
    if "<img" in fragment or "<IMG" in fragment:
        fragment = _IMG_TAG.sub(_fix_image, fragment)
    token = _BASE_URL.set(base_url if _is_absolute(base_url) else None)
    try:
        return _CLEANER.clean(fragment)
    finally:
        _BASE_URL.reset(token)


def html_to_text(fragment: str, limit: int = 500) -> str:
    """Plain text from HTML for summaries: tags stripped, entities decoded.

    The result is text, always escaped where shown, so regexes suffice; only
    the head of the fragment is read, since `limit` characters is all we keep.
    """
    if not fragment:
        return ""
    head = _PARTIAL_TAG.sub("", fragment[: limit * 8])
    text = _TAG.sub(" ", _DROP_BLOCKS.sub(" ", head))
    text = " ".join(html.unescape(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text
