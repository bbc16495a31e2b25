"""HTML pages as sources, in one of two modes.

A list (`items`): each element the `items` CSS selector matches is an entry,
and the selectors of `fields` (`[sources.fields]`, named after the event
fields, as for jsonapi), matched inside it, pick its id, title, url,
published, updated, author, summary, content_html and tags. A value can come
from an attribute: `selector@name` (`url = "h2 a@href"`, `published =
"time@datetime"`), or `@name` for the entry's own. Links resolve against the
page's URL and its `<base href>`; content is handed over raw, and the
pipeline sanitises it as it does feeds'. Entries without an id are told
apart as feed entries without guids are (settle_identities): by their link,
else by a hash of title and date.

A watched region (`watch`): the readable text of what the selector matches
(one line per block element, whitespace collapsed) is kept in the source's
state. The first poll only takes that baseline; each later change becomes one
`Update` event whose content is a line diff. Changes elsewhere on the page,
and changes of whitespace or markup alone, make no event.

Foreign pages are bounded like feeds: the fetcher's body cap and deadlines,
at most `max_items` entries (never more than MAX_ITEMS), and a page whose
elements nest deeper than MAX_DEPTH is refused before it is parsed (lexbor,
and nh3 later, take time quadratic in the depth: 100,000 nested `<div>`s, a
600 KB page, cost 22 s to parse and 33 s to sanitise).
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Self
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from aggregator.connector import Connector, PollContext
from aggregator.decide import carried_identity, settle_identities
from aggregator.exceptions import ParseError
from aggregator.sanitize import MAX_DEPTH, nesting_depth
from aggregator.types import Actor, EventData, JSONObject, PollResult
from connectors.files import local_path, read_local
from connectors.http import fetcher, redact
from connectors.httpsource import HttpSourceOptions, refuse_web_link_local, request_args
from connectors.mapping import parse_time

MAX_ITEMS = 10_000  # entries read from one page, whatever max_items says
DEFAULT_MAX_ITEMS = 500
MAX_WATCH_TEXT = 100_000  # characters of a watched region kept (and diffed)
MAX_REGIONS = 1_000  # elements one watch selector may gather
MAX_DIFF_LINES = 300  # lines of diff in one Update event
MAX_CONTENT_TOTAL = 16 * 1024 * 1024  # characters of entry HTML one poll hands over
TEXT_NODES = 20_000  # nodes read for one entry's text field (nested entries share nodes)
MAX_NAME = 256  # characters of an author's name
MAX_TAGS = 20  # per entry
SUMMARY_LINES = 3  # changed lines quoted in an Update's summary

_PICK = re.compile(r"(.*?)@([A-Za-z_:][-\w:.]*)", re.DOTALL)
_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose mark starts it
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DATE_FORMATS = (
    "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%B %d %Y", "%b %d %Y",
    "%d %B %Y %H:%M", "%d %b %Y %H:%M", "%d.%m.%Y", "%d.%m.%Y %H:%M", "%Y/%m/%d",
)  # fmt: skip
_NOT_RENDERED = "the page may build it with JavaScript, which Tidings does not run"

# Readable text: what is skipped, what makes a line of its own.
_SKIPPED = frozenset({"head", "script", "style", "noscript", "template", "iframe", "object",
                      "embed", "select", "-comment"})  # fmt: skip
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li", "main",
    "menu", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead",
    "title", "tr", "ul",
})  # fmt: skip
_PRE = frozenset({"pre", "textarea", "listing", "plaintext"})


def _option_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("html_option", message)


# --- options -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pick:
    """Where a field's value is: the element `selector` matches inside the
    entry (None: the entry itself), and its `attribute` (None: its text)."""

    selector: str | None
    attribute: str | None


def _is_selector(text: str) -> bool:
    try:
        LexborHTMLParser("").css(text)
    except SelectolaxError:
        return False
    return True


def parse_pick(spec: str) -> Pick:
    """`selector`, `selector@attribute` or `@attribute`. An `@` that no
    attribute name follows belongs to the selector (`a[href$="@x.org"]`)."""
    spec = spec.strip()
    found = _PICK.fullmatch(spec)
    if found and not _escaped_end(found.group(1)):
        selector = found.group(1).strip()
        if not selector or _is_selector(selector):
            return Pick(selector or None, found.group(2))
    return Pick(spec, None)


def _escaped_end(text: str) -> bool:
    """Whether `text` ends in a backslash escape (`.md\\@flex` is one class)."""
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _checked_selector(value: str | None, *, attribute: bool) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if attribute:
        pick = parse_pick(value)
        if pick.selector is None or _is_selector(pick.selector):
            return value
        raise _option_error(f"not a valid CSS selector: {pick.selector!r}")
    if not _is_selector(value):
        hint = " (an @attribute is for fields other than content_html)"
        hint = hint if _PICK.fullmatch(value) else ""
        raise _option_error(f"not a valid CSS selector: {value!r}{hint}")
    return value


class HtmlFields(BaseModel):
    """Where each event field is inside an entry: a CSS selector, matched
    inside the entry (not the entry itself), giving its first match's text;
    `selector@name` gives an attribute instead, `@name` the entry's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(
        default=None,
        description="the entry's own id, e.g. @data-id or a.permalink@href; "
        "default: entries are told apart by their link, else by title and date",
    )
    title: str | None = Field(
        default=None, description="its title; default: the entry's first line of text"
    )
    url: str | None = Field(
        default=None,
        description="its link: the element's href unless an @attribute is named; "
        "default: the entry itself when it is a link, else its first a[href]",
    )
    published: str | None = Field(
        default=None,
        description="its date: the element's datetime attribute, else its text; "
        "default: its first time[datetime]",
    )
    updated: str | None = Field(default=None, description="when it last changed, read as published")
    author: str | None = Field(
        default=None, description="its author's name; an author given as a link gives the URL too"
    )
    summary: str | None = Field(
        default=None, description="its summary text; default: the start of its content"
    )
    content_html: str | None = Field(
        default=None,
        description="the element's HTML (no @attribute); default: the entry's inner HTML",
    )
    tags: str | None = Field(default=None, description="every match inside the entry is a tag")

    @field_validator("content_html")
    @classmethod
    def _selector(cls, value: str | None) -> str | None:
        return _checked_selector(value, attribute=False)

    @field_validator("id", "title", "url", "published", "updated", "author", "summary", "tags")
    @classmethod
    def _pick(cls, value: str | None) -> str | None:
        return _checked_selector(value, attribute=True)


class HtmlOptions(HttpSourceOptions):
    """A page and either a list of entries (`items`) or a region (`watch`)."""

    items: str | None = Field(
        default=None,
        description="CSS selector of each entry of a list on the page; give this or watch",
    )
    fields: HtmlFields = Field(
        default_factory=HtmlFields,
        description="CSS selectors of each entry's fields, matched inside the entry",
    )
    date_format: str | None = Field(
        default=None,
        description="a strptime format of the entries' dates, e.g. %d/%m/%Y %H:%M (UTC unless "
        "it has %z); default: ISO 8601, RFC 2822 and forms like 3 March 2026 or March 3, 2026",
    )
    max_items: int = Field(
        default=DEFAULT_MAX_ITEMS,
        ge=1,
        le=MAX_ITEMS,
        description=f"entries read from the page, the first ones (at most {MAX_ITEMS:,})",
    )
    watch: str | None = Field(
        default=None,
        description="CSS selector of a region to watch: each change of its text becomes an "
        "Update event with a diff; give this or items",
    )
    watch_title: str | None = Field(
        default=None,
        description="title of those events; default: the page's title and 'changed'",
    )

    @field_validator("items", "watch")
    @classmethod
    def _selector(cls, value: str | None) -> str | None:
        return _checked_selector(value, attribute=False)

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "%" not in value:
            raise _option_error("a strptime format needs %-directives, e.g. %d/%m/%Y")
        try:
            datetime.strptime(datetime(2001, 2, 3, 4, 5, 6).strftime(value), value)
        except ValueError as err:
            if "directive" in str(err) or "stray %" in str(err):
                raise _option_error(f"not a strptime format: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if self.items is None and self.watch is None:
            raise _option_error(
                "give items (the CSS selector of each entry of a list) "
                "or watch (the CSS selector of a region to watch)"
            )
        if self.items is not None and self.watch is not None:
            raise _option_error("give either items or watch, not both")
        if self.watch is not None:
            listed = [name for name in _LIST_OPTIONS if name in self.model_fields_set]
            if listed:
                raise _option_error(f"{', '.join(listed)}: only with items, not with watch")
        elif self.watch_title is not None:
            raise _option_error("watch_title: only with watch, not with items")
        return self


_LIST_OPTIONS = ("fields", "date_format", "max_items")


# --- reading a page --------------------------------------------------------------


def decode_html(body: bytes, content_type: str = "") -> str:
    """The page as text, as a browser decodes it: a byte-order mark, else
    the HTTP charset, else a <meta> charset in the first 1024 bytes, else
    UTF-8 when the bytes are UTF-8 and windows-1252 when not."""
    for bom, marked in _BOMS:
        if body.startswith(bom):
            return body.decode(marked, "replace")
    declared = _CHARSET.search(content_type)
    meta = _META_CHARSET.search(body[:1024])
    codec = _codec(declared.group(1) if declared else None)
    if codec is None and (codec := _codec(_ascii(meta))) in ("utf-16", "utf-32"):
        codec = "utf-8"  # a page that can say so in ASCII is not UTF-16 (as in browsers)
    if codec is not None:
        return body.decode(codec, "replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("windows-1252", "replace")


def _ascii(found: re.Match[bytes] | None) -> str | None:
    return found.group(1).decode("ascii", "replace") if found else None


def _codec(label: str | None) -> str | None:
    """A text codec for a declared charset, or None for an unknown one. As
    in browsers, Latin-1 and ASCII mean windows-1252 and UTF-7 is ignored."""
    if not label:
        return None
    try:
        name = codecs.lookup(label).name
        b" ".decode(name)  # base64, rot13 and the like are no text encodings
    except LookupError:
        return None
    if name in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"
    return None if name == "utf-7" else name


def parse_page(body: bytes, content_type: str, url: str, source_id: str) -> LexborHTMLParser:
    """The page's tree; a ParseError when it nests deeper than MAX_DEPTH."""
    text = decode_html(body, content_type)
    if nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise ParseError(
            f"{source_id}: {redact(url)} nests elements more than {MAX_DEPTH:,} deep "
            "(broken or hostile HTML); not parsed"
        )
    return LexborHTMLParser(text)


def page_base(tree: LexborHTMLParser, url: str) -> str:
    """What relative links resolve against: the first <base href>, itself
    relative to the page's URL, else that URL."""
    node = tree.css_first("base[href]")
    href = (node.attributes.get("href") or "").strip() if node is not None else ""
    if href:
        try:
            return urljoin(url, href)
        except ValueError:  # "//[x": not a base anyone can use
            pass
    return url


def page_title(tree: LexborHTMLParser) -> str:
    node = tree.css_first("title")
    return " ".join((node.text() if node is not None else "").split())[:200]


def resolve(href: str | None, base: str) -> str | None:
    """`href` as an absolute http(s) link (a file: one on a local page), or
    None: javascript:, data: and junk are no links."""
    text = (href or "").strip()
    if not text:
        return None
    try:
        link = urljoin(base, text)
        scheme = urlsplit(link).scheme.lower()
    except ValueError:
        return None
    allowed = ("http", "https", "file") if base.lower().startswith("file:") else ("http", "https")
    return link if scheme in allowed else None


def _walk(root: LexborNode) -> Iterator[tuple[LexborNode, bool]]:
    """Depth first, without recursion (a page may nest 1,000 deep): each node
    as (node, True) on the way in and (node, False) on the way out. What is
    under a _SKIPPED element is not visited, unless it is `root` itself."""
    node = root
    root_id = root.mem_id
    while True:
        yield node, True
        child = node.child if node.mem_id == root_id or node.tag not in _SKIPPED else None
        if child is not None:
            node = child
            continue
        while True:
            yield node, False
            if node.mem_id == root_id:
                return
            sibling = node.next
            if sibling is not None:
                node = sibling
                break
            parent = node.parent
            if parent is None:
                return
            node = parent


@dataclass
class _Lines:
    """Text gathered into lines, whitespace collapsed, empty lines dropped."""

    lines: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    filled: bool = False  # the line so far has more than whitespace

    def end(self) -> None:
        line = " ".join("".join(self.parts).split())
        self.parts.clear()
        self.filled = False
        if line:
            self.lines.append(line)

    def add(self, text: str, pre: bool) -> None:
        first, *rest = text.split("\n") if pre else (text,)
        self._append(first)
        for line in rest:
            self.end()
            self._append(line)

    def _append(self, text: str) -> None:
        self.parts.append(text)
        self.filled = self.filled or bool(text.strip())

    def cell(self) -> None:
        if self.filled:
            self.parts.append(" | ")


def readable_lines(
    root: LexborNode, *, max_lines: int | None = None, max_nodes: int | None = None
) -> list[str]:
    """The text of `root` as a reader sees it: a line per block element and
    <br>, table cells joined with " | ", whitespace collapsed; no scripts,
    styles or head. Stops after `max_lines` lines or `max_nodes` nodes."""
    out = _Lines()
    pre = 0
    for count, (node, entering) in enumerate(_walk(root)):
        if (max_nodes is not None and count >= max_nodes) or (
            max_lines is not None and len(out.lines) >= max_lines
        ):
            break
        tag = node.tag or ""
        if tag == "-text":
            if entering:
                out.add(node.text_content or "", pre > 0)
            continue
        if tag in _BLOCKS or tag == "br":
            out.end()
        elif tag in ("td", "th") and entering:
            out.cell()
        if tag in _PRE:
            pre += 1 if entering else -1
    out.end()
    return out.lines[:max_lines] if max_lines is not None else out.lines


def _text(node: LexborNode) -> str:
    return " ".join(readable_lines(node, max_nodes=TEXT_NODES))


# --- list mode -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedList:
    events: list[EventData]
    problems: list[str]  # for the admins: options that found nothing, entries left out


def _descendant(entry: LexborNode, selector: str) -> LexborNode | None:
    """The first element inside `entry` that `selector` matches, as the DOM's
    querySelector finds it (lexbor's css also matches the entry itself)."""
    found = entry.css_first(selector)
    if found is None or found.mem_id != entry.mem_id:
        return found
    matches = entry.css(selector)
    return matches[1] if len(matches) > 1 else None


def _target(entry: LexborNode, pick: Pick) -> LexborNode | None:
    return entry if pick.selector is None else _descendant(entry, pick.selector)


def parse_date(text: str, date_format: str | None) -> datetime | None:
    """A date as written on a page: by `date_format` when given, else as ISO
    8601 or RFC 2822 (never ambiguous), else in a few written forms when no
    format is given (_DATE_FORMATS). Naive dates are UTC."""
    text = " ".join(text.split())
    if not text:
        return None
    when = _strptime(text, date_format) if date_format else None
    when = when or parse_time(text)
    for fmt in () if date_format else _DATE_FORMATS:
        when = when or _strptime(text, fmt)
    if when is None:
        return None
    try:
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except OverflowError:
        return None


def _strptime(text: str, fmt: str) -> datetime | None:
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        return None


class _ListReader:
    """Reads the entries of one page, counting what each field's selector found."""

    def __init__(self, opts: HtmlOptions, base: str) -> None:
        self.date_format = opts.date_format
        self.base = base
        self.specs = {
            name: spec
            for name in HtmlFields.model_fields
            if (spec := getattr(opts.fields, name)) is not None
        }
        self.picks = {n: parse_pick(s) for n, s in self.specs.items() if n != "content_html"}
        self.found: dict[str, int] = dict.fromkeys(self.specs, 0)
        self.bad_dates: list[str] = []
        self.content_left = MAX_CONTENT_TOTAL
        self.content_dropped = 0

    def _node(self, entry: LexborNode, name: str) -> LexborNode | None:
        node = _target(entry, self.picks[name])
        self.found[name] += node is not None
        return node

    def value(
        self, entry: LexborNode, name: str, attribute: str | None = None, *, text: bool = True
    ) -> str:
        """Field `name` of `entry` ("" when missing): the attribute its
        selector names, else `attribute` when the element has it, else (when
        `text`) the element's text."""
        node = self._node(entry, name) if name in self.picks else None
        return _read(node, self.picks[name], attribute, text=text) if node is not None else ""

    def entry(self, entry: LexborNode) -> EventData | None:
        link = self._link(entry)
        title = " ".join(self.value(entry, "title").split())
        # An entry without the title element is still shown: by its first line.
        title = title or " ".join(readable_lines(entry, max_lines=1, max_nodes=TEXT_NODES))
        if not title and link is None:
            return None  # nothing to show or to tell it apart
        author_name, author_url = self._author(entry)
        summary = " ".join(self.value(entry, "summary").split())
        extra: JSONObject = {"content_base": self.base} if self.base != link else {}
        return EventData(
            # Without an id the connector settles identities: the link, else a hash.
            external_id=" ".join(self.value(entry, "id").split()) or None,
            title=title,
            summary=html.escape(summary),  # the pipeline reads summaries as HTML
            content_html=self._content(entry),
            url=link,
            actor=Actor(name=author_name, url=author_url),
            published=self._date(entry, "published"),
            updated=self._date(entry, "updated"),
            tags=self._tags(entry),
            extra=extra,
        )

    def _link(self, entry: LexborNode) -> str | None:
        if "url" in self.picks:
            return resolve(self.value(entry, "url", "href", text=False), self.base)
        if entry.tag == "a" and entry.attributes.get("href"):
            return resolve(entry.attributes.get("href"), self.base)
        anchor = _descendant(entry, "a[href]")
        return resolve(anchor.attributes.get("href"), self.base) if anchor is not None else None

    def _date(self, entry: LexborNode, name: str) -> datetime | None:
        if name in self.picks:
            text = self.value(entry, name, "datetime")
        elif name == "published":
            node = _descendant(entry, "time[datetime]")
            text = (node.attributes.get("datetime") or "") if node is not None else ""
        else:
            return None
        when = parse_date(text, self.date_format)
        if when is None and text and name in self.picks:
            self.bad_dates.append(text[:80])
        return when

    def _author(self, entry: LexborNode) -> tuple[str | None, str | None]:
        node = self._node(entry, "author") if "author" in self.picks else None
        if node is None:
            return None, None
        name = " ".join(_read(node, self.picks["author"]).split())[:MAX_NAME]
        href = node.attributes.get("href") if node.tag == "a" else None
        return name or None, resolve(href, self.base)

    def _tags(self, entry: LexborNode) -> tuple[str, ...]:
        pick = self.picks.get("tags")
        if pick is None:
            return ()
        nodes = [entry] if pick.selector is None else entry.css(pick.selector)
        nodes = [n for n in nodes if pick.selector is None or n.mem_id != entry.mem_id]
        self.found["tags"] += bool(nodes)
        names = (" ".join(_read(n, pick).split()) for n in nodes[: MAX_TAGS * 2])
        return tuple(dict.fromkeys(name for name in names if name))[:MAX_TAGS]

    def _content(self, entry: LexborNode) -> str:
        selector = self.specs.get("content_html")
        if selector is not None:
            node = _descendant(entry, selector)
            self.found["content_html"] += node is not None
            markup = (node.html or "") if node is not None else ""
        else:
            markup = entry.inner_html or ""
        if len(markup) > self.content_left:
            self.content_dropped += 1
            return ""
        self.content_left -= len(markup)
        return markup

    def problems(self, read: int) -> list[str]:
        out = [
            f"fields.{name} selector {self.specs[name]!r} matched nothing in any of "
            f"the {read:,} entries"
            for name, hits in self.found.items()
            if hits == 0
        ]
        if self.bad_dates:
            out.append(
                f"could not read {len(self.bad_dates):,} date(s), e.g. "
                f"{self.bad_dates[0]!r}; set date_format"
            )
        if self.content_dropped:
            out.append(
                f"content left out of {self.content_dropped:,} entries: over "
                f"{MAX_CONTENT_TOTAL:,} characters of HTML in all"
            )
        return out


def _read(node: LexborNode, pick: Pick, attribute: str | None = None, *, text: bool = True) -> str:
    """The attribute `pick` names, else `attribute` when `node` has it, else
    (when `text`) the node's text."""
    wanted = pick.attribute or attribute
    value = node.attributes.get(wanted) if wanted else None
    if value is None and text and pick.attribute is None:
        value = _text(node)
    return (value or "").strip()


def parse_list(
    body: bytes, url: str, content_type: str, opts: HtmlOptions, source_id: str
) -> ParsedList:
    """The entries of a page fetched from `url`, read by `opts` (list mode).
    Module-level, picklable arguments: a process pool runs it."""
    tree = parse_page(body, content_type, url, source_id)
    selector = opts.items or ""
    entries = tree.css(selector)
    if not entries:
        raise ParseError(
            f"{source_id}: items selector {selector!r} matched nothing on {redact(url)} "
            f"({_NOT_RENDERED})"
        )
    problems = []
    if len(entries) > opts.max_items:
        problems.append(
            f"items matched {len(entries):,} entries; the first {opts.max_items:,} were read "
            "(max_items)"
        )
        entries = entries[: opts.max_items]
    reader = _ListReader(opts, page_base(tree, url))
    events = [event for entry in entries if (event := reader.entry(entry)) is not None]
    return ParsedList(events, problems + reader.problems(len(entries)))


# --- watch mode ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """A watched region's readable text (cut at MAX_WATCH_TEXT characters),
    the digest of all of it, and the page's title."""

    text: str
    digest: str
    title: str
    problem: str | None = None


def _outermost(nodes: list[LexborNode]) -> list[LexborNode]:
    """`nodes` (in document order) less those inside an earlier one."""
    kept: list[LexborNode] = []
    for node in nodes:
        if kept and _inside(node, kept[-1]):
            continue
        kept.append(node)
    return kept


def _inside(node: LexborNode, ancestor: LexborNode) -> bool:
    target = ancestor.mem_id
    parent = node.parent
    while parent is not None:
        if parent.mem_id == target:
            return True
        parent = parent.parent
    return False


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head[: head.rfind("\n")] if "\n" in head else head


def read_region(body: bytes, url: str, content_type: str, selector: str, source_id: str) -> Region:
    """The region of a page `selector` picks (every element it matches, the
    outermost ones). Module-level, picklable arguments: a process pool runs it."""
    tree = parse_page(body, content_type, url, source_id)
    nodes = tree.css(selector)
    if not nodes:
        raise ParseError(
            f"{source_id}: watch selector {selector!r} matched nothing on {redact(url)} "
            f"({_NOT_RENDERED})"
        )
    problem = None
    if len(nodes) > MAX_REGIONS:
        problem = f"watch matched {len(nodes):,} elements; the first {MAX_REGIONS:,} are watched"
        nodes = nodes[:MAX_REGIONS]
    text = "\n".join(line for node in _outermost(nodes) for line in readable_lines(node))
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
    return Region(_cut(text, MAX_WATCH_TEXT), digest, page_title(tree), problem)


@dataclass(frozen=True, slots=True)
class TextDiff:
    summary: str  # plain text: the first changed lines
    html: str  # the diff, every line escaped
    added: int
    removed: int


def diff_text(old: str, new: str) -> TextDiff:
    """A line diff of two readable texts, as escaped HTML: removed lines in
    <del>, added ones in <ins>, two lines of context, "…" between hunks."""
    rows: list[str] = []
    changed: list[str] = []
    added = removed = 0
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), n=2, lineterm="")
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        sign, text = line[:1], html.escape(line[1:])
        if sign == "@":
            row = "…" if rows else ""
        elif sign == "+":
            added += 1
            row = f"<ins>+ {text}</ins>"
        elif sign == "-":
            removed += 1
            row = f"<del>- {text}</del>"
        else:
            row = f"  {text}"
        if sign in "+-" and len(changed) < SUMMARY_LINES:
            changed.append(f"{sign} {line[1:]}")
        if row:
            rows.append(row)
    if len(rows) > MAX_DIFF_LINES:
        rows[MAX_DIFF_LINES:] = [f"… ({len(rows) - MAX_DIFF_LINES:,} more lines of diff left out)"]
    if not rows:  # the change lies past MAX_WATCH_TEXT characters
        rows.append(html.escape(f"(changed after the first {MAX_WATCH_TEXT:,} characters)"))
    return TextDiff(" · ".join(changed), "<pre>" + "\n".join(rows) + "</pre>", added, removed)


def change_event(
    opts: HtmlOptions, page_url: str, region: Region, diff: TextDiff, now: datetime
) -> EventData:
    """The Update event for one change of a watched region. Its id names the
    poll too: a region that flips back and forth makes an event each time
    (the URL in it redacted: ids are shown, and a query may hold a token)."""
    what = f"{diff.added} line{'s' * (diff.added != 1)} added, {diff.removed} removed"
    return EventData(
        external_id=f"{redact(opts.url)}#{opts.watch}@{region.digest[:16]}/{now.isoformat()}",
        verb="Update",
        object_type="Page",
        title=opts.watch_title or f"{region.title or redact(page_url)} changed",
        summary=html.escape(f"{what}: {diff.summary}" if diff.summary else what),
        content_html=diff.html,
        url=page_url,
        published=now,
    )


# --- the connector -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Page:
    body: bytes | None  # None: not modified
    url: str
    content_type: str = ""
    cache: JSONObject = field(default_factory=dict)  # validators for the next fetch
    max_age: float | None = None
    moved: str | None = None


async def _fetch(opts: HtmlOptions, state: JSONObject, ctx: PollContext) -> _Page:
    path = local_path(opts.url)
    if path is not None:
        version, body = await read_local(path, state.get("version"), ctx)
        return _Page(body, (ctx.base_dir / path).resolve().as_uri(), cache={"version": version})
    got = await (await fetcher(ctx)).get(
        opts.url,
        etag=state.get("etag"),
        last_modified=state.get("last_modified"),
        **await request_args(opts, ctx),
    )
    return _Page(
        None if got.not_modified else got.content,
        got.url,
        got.content_type,
        {"etag": got.etag, "last_modified": got.last_modified},
        got.max_age,
        got.permanent_redirect,
    )


class HtmlConnector(Connector[HtmlOptions]):
    kind = "html"
    Options = HtmlOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        refuse_web_link_local(self.options, ctx)
        state = state or {}
        page = await _fetch(self.options, state, ctx)
        if page.body is None:
            return PollResult(
                not_modified=True, min_interval=page.max_age, permanent_redirect=page.moved
            )
        if self.options.watch is not None:
            return await self._watch(page, state, ctx)
        parsed: ParsedList = await ctx.run_cpu(
            parse_list, page.body, page.url, page.content_type, self.options, ctx.source_id
        )
        events, identity = settle_identities(parsed.events, state)
        return PollResult(
            events=events,
            state={**page.cache, **identity},
            min_interval=page.max_age,
            permanent_redirect=page.moved,
            warning=_warning(ctx.source_id, parsed.problems),
        )

    async def _watch(self, page: _Page, state: JSONObject, ctx: PollContext) -> PollResult:
        selector = self.options.watch or ""
        region: Region = await ctx.run_cpu(
            read_region, page.body, page.url, page.content_type, selector, ctx.source_id
        )
        kept = {**page.cache, "hash": region.digest, "text": region.text}
        before, old_text = state.get("hash"), state.get("text")
        events = []
        # No baseline yet (a new source, new options): take this one silently.
        if isinstance(before, str) and before != region.digest:
            old = old_text if isinstance(old_text, str) else ""
            diff: TextDiff = await ctx.run_cpu(diff_text, old, region.text)
            events.append(change_event(self.options, page.url, region, diff, ctx.now))
        return PollResult(
            events=events,
            state=kept,
            min_interval=page.max_age,
            permanent_redirect=page.moved,
            warning=_warning(ctx.source_id, [region.problem] if region.problem else []),
        )

    @classmethod
    def carry_state(cls, state: JSONObject | None) -> JSONObject | None:
        """A list's identity scheme and carried ids (as for feeds); nothing of
        a watch, whose new options start a new baseline."""
        return carried_identity(state) or None


def _warning(source_id: str, problems: list[str]) -> str | None:
    return f"{source_id}: " + "; ".join(problems) if problems else None
