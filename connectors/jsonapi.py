"""JSON API sources: an endpoint's items, mapped to events by JMESPath.

A poll GETs `url` (or POSTs a JSON `body` to it), follows its pages (a Link
header, a next-URL field, a cursor, an offset or a page number; at most
`pagination.max_pages` pages and `max_items` items), and maps each item
through `items` and `fields` (connectors/mapping.py). docs/connectors.md,
"JSON APIs", lists the options with examples.

Incremental polling: the largest `incremental.since` value among the items
read, or the last `incremental.cursor` value of the responses, is kept in the
source's state, committed with the events, and sent with the next poll as
`{since}` / `{cursor}`. Re-fetches overlap (the API is asked for ">= since"):
the pipeline drops what it has, and an edited item (same id, changed fields)
becomes an Update event when the source tracks updates.

Foreign JSON is never trusted. Parsing and mapping run in the parser pool.
Invalid JSON, an `items` that selects nothing, an `id` found in no item, or
items none of which map fail the poll with an error naming the source (and
the field); items that fail among good ones are a warning, and the good ones
are stored. A page after the first that fails ends the poll with what came
before it, and the incremental state does not move, so nothing is skipped.
Next-page links never leave the origin of `url`: the credentials would follow.

The state remembers a fingerprint of the mapping: after the mapping changes
(new `fields`, a new preset), the first poll rebaselines instead of
announcing every stored item as an Update, and reports the source's own
fields that matched nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

from jmespath.exceptions import JMESPathError
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import Connector, ConnectorOptions, PollContext
from aggregator.durations import parse_duration
from aggregator.exceptions import ConnectorError, ParseError
from aggregator.types import EventData, JSONObject, PollResult
from connectors.files import local_path, read_local
from connectors.http import Fetcher, FetchResult, fetcher, redact
from connectors.httpsource import HttpSourceOptions, refuse_web_link_local, request_args
from connectors.mapping import (
    MAX_PROBLEMS,
    Expr,
    FieldMapping,
    Mapped,
    MappedOptions,
    MappingError,
    Spec,
    compile_spec,
    describe_problems,
    load_preset,
    parse_time,
)

MAX_PAGES = 1_000  # the largest pagination.max_pages allowed
MAX_ITEMS = 100_000  # the largest max_items allowed
MAX_STATE_TEXT = 8_192  # characters of a since or cursor value worth keeping in the state
# The rules items are read by; part of the mapping fingerprint, so a change
# that alters what items map to rebaselines instead of flooding Updates.
RULES = 1
_PLACEHOLDER = re.compile(r"\{(since|cursor)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,]+))""", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# State keys naming a mapping: the one stored items were made by, the one checked.
_FINGERPRINTS = ("mapping", "checked")

PaginationType = Literal["none", "link", "next_url", "cursor", "offset", "page"]
# Keys each pagination type takes besides type, max_pages, size_param and size.
_PAGINATION_KEYS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "link": frozenset({"more"}),
    "next_url": frozenset({"next", "more"}),
    "cursor": frozenset({"next", "more", "param"}),
    "offset": frozenset({"param", "start", "total", "more"}),
    "page": frozenset({"param", "start", "total", "more"}),
}
_PAGINATION_REQUIRED: dict[str, tuple[str, ...]] = {
    "next_url": ("next",),
    "cursor": ("next", "param"),
    "offset": ("param",),
    "page": ("param",),
}


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("jsonapi_option", message)


def _spec(text: str | None, where: str) -> Spec | None:
    """A JMESPath option compiled; a config error naming it when it is invalid."""
    if text is None:
        return None
    try:
        return compile_spec(text, where)
    except MappingError as err:
        raise _error(str(err)) from None


class Pagination(ConnectorOptions):
    """`[sources.pagination]`: how a poll finds its next page."""

    type: PaginationType = Field(
        default="none",
        description="none, link (Link header), next_url, cursor, offset or page",
    )
    next: str | None = Field(
        default=None,
        description="JMESPath on a response: the next page's URL (next_url) or cursor (cursor)",
    )
    more: str | None = Field(
        default=None, description="JMESPath on a response: false or missing on the last page"
    )
    param: str | None = Field(
        default=None, description="the parameter carrying the cursor, offset or page number"
    )
    size_param: str | None = Field(default=None, description="the parameter carrying size")
    size: int | None = Field(default=None, ge=1, le=10_000, description="items per page to ask for")
    start: int | None = Field(
        default=None, ge=0, description="the first offset (default 0) or page (default 1)"
    )
    total: str | None = Field(
        default=None, description="JMESPath on a response: how many items there are in all"
    )
    max_pages: int = Field(
        default=10, ge=1, le=MAX_PAGES, description="pages fetched at most per poll"
    )

    @model_validator(mode="after")
    def _fits_type(self) -> Pagination:
        allowed = _PAGINATION_KEYS[self.type] | {"type", "max_pages", "size_param", "size"}
        unused = sorted(self.model_fields_set - allowed)
        if unused:
            raise _error(f"{unused[0]}: not used by {self.type!r} pagination")
        for key in _PAGINATION_REQUIRED.get(self.type, ()):
            if getattr(self, key) is None:
                raise _error(f"{key}: required for {self.type!r} pagination")
        if self.size_param is not None and self.size is None:
            raise _error("size: required with size_param")
        for key in ("next", "more", "total"):
            _spec(getattr(self, key), key)
        return self


class Incremental(ConnectorOptions):
    """`[sources.incremental]`: what a poll sends so the API answers only
    what is new."""

    since: str | None = Field(
        default=None,
        description="JMESPath on an item: a date, number or text whose largest value "
        "is kept and sent next poll as {since}",
    )
    since_param: str | None = Field(
        default=None, description="send the since value as this parameter"
    )
    since_format: str | None = Field(
        default=None, description="strftime format to send a date since value in (UTC)"
    )
    initial_since: str | int | None = Field(
        default=None,
        description="{since} before any item was read: a value, or a duration such as 7d "
        "(that long before the poll)",
    )
    overlap: str | None = Field(
        default=None, description="a duration taken off a date since value before it is sent"
    )
    cursor: str | None = Field(
        default=None,
        description="JMESPath on a response: a value kept and sent next poll as {cursor}",
    )
    cursor_param: str | None = Field(
        default=None, description="send the cursor value as this parameter"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Incremental:
        for key in ("since_param", "since_format", "initial_since", "overlap"):
            if getattr(self, key) is not None and self.since is None:
                raise _error(f"{key}: needs since")
        if self.cursor_param is not None and self.cursor is None:
            raise _error("cursor_param: needs cursor")
        if self.since_format is not None and "%" not in self.since_format:
            raise _error("since_format: a strftime format such as %Y-%m-%dT%H:%M:%SZ")
        if self.overlap is not None:
            try:
                parse_duration(self.overlap)
            except ValueError as err:
                raise _error(f"overlap: {err}") from None
        _spec(self.since, "since")
        _spec(self.cursor, "cursor")
        return self

    @property
    def enabled(self) -> bool:
        return self.since is not None or self.cursor is not None


class JsonApiOptions(HttpSourceOptions, MappedOptions):
    """A JSON API endpoint: what to ask, how to page, what to map."""

    preset_kind = "jsonapi"

    method: Literal["GET", "POST"] = Field(default="GET", description="GET or POST")
    params: dict[str, str] = Field(
        default_factory=dict,
        description="query parameters; values may hold {since} and {cursor}",
    )
    body: dict[str, Any] | None = Field(
        default=None,
        description="JSON object POSTed; text values may hold {since} and {cursor}",
    )
    pagination: Pagination = Field(default_factory=Pagination)
    incremental: Incremental = Field(default_factory=Incremental)
    max_items: int = Field(
        default=10_000, ge=1, le=MAX_ITEMS, description="items read at most per poll"
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("body")
    @classmethod
    def _json_body(cls, body: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            json.dumps(body, allow_nan=False)
        except (TypeError, ValueError):
            raise _error("not JSON: quote dates and times (a TOML date is no JSON)") from None
        return body

    @model_validator(mode="after")
    def _consistent(self) -> JsonApiOptions:
        if self.body is not None and self.method != "POST":
            raise _error('body: needs method = "POST"')
        used = set(_PLACEHOLDER.findall(json.dumps([self.params, self.body])))
        if "since" in used and self.incremental.since is None:
            raise _error("{since} is used but incremental.since is not set")
        if "cursor" in used and self.incremental.cursor is None:
            raise _error("{cursor} is used but incremental.cursor is not set")
        if local_path(self.url) is not None:
            self._local_only()
        return self

    def _local_only(self) -> None:
        """A local file is read whole, as it is: nothing to send or page."""
        given = self.model_fields_set & {"method", "params", "body", "pagination", "incremental"}
        if self.method != "GET" or self.params or self.body or given - {"method"}:
            raise _error(
                "a file: url takes no method POST, params, body, pagination or incremental"
            )


# --- reading one response (in the parser pool) --------------------------------


@dataclass(frozen=True)
class PageReader:
    """What reading one response needs; picklable, for the parser pool."""

    mapping: FieldMapping
    next: Spec | None = None
    more: Spec | None = None
    total: Spec | None = None
    since: Spec | None = None
    cursor: Spec | None = None

    @classmethod
    def of(cls, opts: JsonApiOptions) -> PageReader:
        pages, inc = opts.pagination, opts.incremental
        return cls(
            mapping=opts.mapping,
            next=_spec(pages.next, "pagination.next"),
            more=_spec(pages.more, "pagination.more"),
            total=_spec(pages.total, "pagination.total"),
            since=_spec(inc.since, "incremental.since"),
            cursor=_spec(inc.cursor, "incremental.cursor"),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """What one response held."""

    events: list[EventData]
    problems: list[str]
    unmapped: int  # items skipped for a problem
    read: int  # items mapped (no more than the poll had room for)
    held: int  # items the response held
    since: Any = None  # the largest incremental.since value among the items read
    next: Any = None  # pagination.next's value
    more: bool = True  # pagination.more's verdict
    total: int | None = None
    cursor: Any = None  # incremental.cursor's value
    matched: frozenset[str] = frozenset()  # the source's own fields some item had


def load_json(body: bytes, url: str, content_type: str = "") -> Any:
    """The JSON document in `body`; ParseError saying why not."""
    where = redact(url)
    if not body or body.isspace():
        raise ParseError(f"{where}: empty response, expected JSON")
    try:
        return json.loads(body)
    except RecursionError:
        raise ParseError(f"{where}: JSON nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError included
        kind = content_type.split(";")[0].strip()
        hint = f" (Content-Type {kind})" if kind and "json" not in kind.lower() else ""
        raise ParseError(f"{where}: not valid JSON{hint}: {err}") from None


def read_page(
    reader: PageReader,
    body: bytes,
    url: str,
    content_type: str,
    room: int,
    check: bool = False,
    first: bool = True,
) -> Page:
    """Parse and map one response fetched from `url`: at most `room` items;
    `check` also notes which of the source's own fields some item had.
    Module-level so the parser pool can run it."""
    doc = load_json(body, url, content_type)
    items = _items(reader.mapping, doc, url, first)
    kept = items[:room]
    try:
        # The items are already selected: the list itself is the document.
        mapped = replace(reader.mapping, items=None).map(kept, base_url=url)
        return Page(
            events=mapped.events,
            problems=mapped.problems,
            unmapped=mapped.unmapped,
            read=len(kept),
            held=len(items),
            since=_largest(reader.since, kept) if reader.since else None,
            next=_value(reader.next, doc, "pagination.next"),
            more=bool(_value(reader.more, doc, "pagination.more")) if reader.more else True,
            total=_count(_value(reader.total, doc, "pagination.total")),
            cursor=_value(reader.cursor, doc, "incremental.cursor"),
            matched=_matched(reader.mapping, kept) if check else frozenset(),
        )
    except RecursionError:
        raise ParseError(f"{redact(url)}: the response is nested too deeply to map") from None


def _items(mapping: FieldMapping, doc: Any, url: str, first: bool) -> list[Any]:
    """The items of `doc`. Selecting nothing is a mistake in `items` on the
    first page, an empty page after it; and an empty list written as null
    (`{"data": null}`, as Go encodes one) is an empty page anywhere."""
    try:
        return mapping.items_of(doc)
    except JMESPathError as err:  # a function given the wrong type, say
        raise ParseError(f"{redact(url)}: items ({mapping.items_source}): {err}") from None
    except MappingError as err:
        found = mapping.items.search(doc) if mapping.items is not None else doc
        if found is None and (not first or _null_list(mapping.items, doc)):
            return []
        raise ParseError(f"{redact(url)}: {err}") from None


def _null_list(items: Expr | None, doc: Any) -> bool:
    """Whether `items`, a plain path ("data.items"), ends at a key that is
    there with the value null (not missing: that is a typo)."""
    if items is None or items.path is None:
        return False
    *parents, last = items.path
    node = doc
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    return isinstance(node, dict) and last in node and node[last] is None


def _value(spec: Spec | None, doc: Any, where: str) -> Any:
    if spec is None:
        return None
    try:
        return spec(doc)
    except JMESPathError as err:
        raise ParseError(f"{where} ({spec.source}): {err}") from None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _matched(mapping: FieldMapping, items: list[Any]) -> frozenset[str]:
    """The source's own fields that gave something for at least one item."""
    found = set()
    for name, spec in mapping.overrides.items():
        for item in items:
            try:
                value = spec(item)
            except JMESPathError:
                continue  # reported as the item's problem
            if value is not None and value != "" and value != [] and value != {}:
                found.add(name)
                break
    return frozenset(found)


def since_key(value: Any) -> tuple[int, Any] | None:
    """How since values compare: numbers (digits in text too) by value,
    dates by time, other text as text; None for what is none of these."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return (0, value) if math.isfinite(value) else None  # NaN is no JSON to store
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_STATE_TEXT:
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return (0, float(text) if "." in text else int(text))
    when = parse_time(text)
    return (1, when.timestamp()) if when else (2, text)


def _keepable(cursor: Any) -> bool:
    """A cursor worth keeping: short text or a finite number."""
    if isinstance(cursor, str):
        return 0 < len(cursor) <= MAX_STATE_TEXT
    return isinstance(cursor, int | float) and since_key(cursor) is not None


def later(a: Any, b: Any) -> Any:
    """The later of two since values (`a` on a tie); either may be None."""
    key_a, key_b = since_key(a), since_key(b)
    if key_b is None:
        return a if key_a is not None else None
    if key_a is None or key_b > key_a:
        return b
    return a


def _largest(spec: Spec, items: list[Any]) -> Any:
    best = None
    for item in items:
        try:
            best = later(best, spec(item))
        except JMESPathError:
            continue
    return best


# --- requests ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str  # with its query
    body: Any = None

    @property
    def key(self) -> str:
        """The same key twice: a page that links back to one already read."""
        return f"{self.method} {self.url} {json.dumps(self.body, sort_keys=True)}"


_MISSING = object()  # a placeholder with no value yet: the key is left out


def fill(value: Any, values: dict[str, Any]) -> Any:
    """`value` with `{since}` / `{cursor}` replaced. A text that is one
    placeholder takes the value as it is (a number stays a number); an
    object key or list entry whose placeholder has no value yet is left out."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            found = values.get(whole.group(1))
            return _MISSING if found is None else found
        if any(values.get(name) is None for name in _PLACEHOLDER.findall(value)):
            return _MISSING
        return _PLACEHOLDER.sub(lambda m: as_text(values[m.group(1)]), value)
    if isinstance(value, dict):
        filled = {k: fill(v, values) for k, v in value.items()}
        return {k: v for k, v in filled.items() if v is not _MISSING}
    if isinstance(value, list):
        return [v for v in (fill(v, values) for v in value) if v is not _MISSING]
    return value


def as_text(value: Any) -> str:
    """A value as a query parameter or inside a text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def with_query(url: str, params: dict[str, Any]) -> str:
    """`url` with `params` added to its query, replacing those of the same
    name; the rest of its query stays as it was written."""
    if not params:
        return url
    parts = urlsplit(url)
    kept = [
        p for p in parts.query.split("&") if p and unquote_plus(p.split("=", 1)[0]) not in params
    ]
    added = urlencode([(k, as_text(v)) for k, v in params.items()], quote_via=quote)
    return urlunsplit(parts._replace(query="&".join([*kept, added])))


def set_path(body: dict[str, Any], dotted: str, value: Any) -> None:
    """body[a][b] = value for "a.b", making the objects on the way."""
    *path, last = dotted.split(".")
    node = body
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def link_next(header: str | None) -> str | None:
    """The rel="next" target of a Link header (RFC 8288)."""
    for match in _LINK.finditer(header or ""):
        for rel in _REL.finditer(match.group(2)):
            if "next" in (rel.group(1) or rel.group(2) or "").lower().split():
                return match.group(1).strip()
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def same_origin(start: str, target: str) -> bool:
    """Whether the source's credentials may go to `target`: the origin of
    `start`, or its https upgrade on the default ports."""
    try:
        a, b = _origin(start), _origin(target)
    except ValueError:
        return False
    return a == b or (a == ("http", b[1], 80) and b == ("https", a[1], 443))


def mapping_fingerprint(opts: JsonApiOptions) -> str:
    """A digest of what items map to: `items`, `fields`, the preset's content."""
    preset = load_preset(opts.preset_kind, opts.preset) if opts.preset else None
    data = {
        "rules": RULES,
        "items": opts.items,
        "fields": opts.fields,
        "preset": [preset.fields, list(preset.rules)] if preset else None,
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# --- the connector ---------------------------------------------------------------


class JsonApiConnector(Connector[JsonApiOptions]):
    kind = "jsonapi"
    Options = JsonApiOptions

    def __init__(self, options: JsonApiOptions) -> None:
        super().__init__(options)
        self.reader = PageReader.of(options)
        self.fingerprint = mapping_fingerprint(options)

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        refuse_web_link_local(self.options, ctx)
        walk = _Walk(self, state or {}, ctx)
        path = local_path(self.options.url)
        if path is not None:
            return await walk.read_file(path)
        return await walk.run()

    @classmethod
    def carry_state(cls, state: JSONObject | None) -> JSONObject | None:
        """The mapping fingerprints: new options that change the mapping then
        rebaseline; anything cached (an ETag, a since value) is dropped."""
        kept = {k: v for k, v in (state or {}).items() if k in _FINGERPRINTS and isinstance(v, str)}
        return kept or None


class _Walk:
    """One poll's way through the pages, and what it gathered."""

    def __init__(self, connector: JsonApiConnector, state: JSONObject, ctx: PollContext) -> None:
        self.connector = connector
        self.opts = connector.options
        self.state = state
        self.ctx = ctx
        stored, fingerprint = state.get("mapping"), connector.fingerprint
        # Items stored under another mapping: take their new versions in silently.
        self.rebaseline = stored is not None and stored != fingerprint
        # Until some items were read under this mapping, check its fields.
        self.check = state.get("checked") != fingerprint
        self.events: list[EventData] = []
        self.problems: list[str] = []
        self.notes: list[str] = []  # what else the warning says
        self.matched: set[str] = set()
        self.unmapped = 0
        self.read = 0
        self.held = 0  # items the pages held (page pagination counts them)
        self.since: Any = None
        self.cursor: Any = None
        self.advance = True  # the incremental state may move on
        self.retry_after: float | None = None
        self.fixed: dict[str, Any] = {}  # parameters every page sends
        self.params: dict[str, Any] = {}
        self.body: Any = None
        self.position: Any = None  # the offset, page number or cursor asked for

    # --- the walk

    async def run(self) -> PollResult:
        http = await fetcher(self.ctx)
        args = await request_args(self.opts, self.ctx)
        if not any(name.lower() == "accept" for name in self.opts.headers):
            args["headers"] = {"Accept": "application/json", **self.opts.headers}
        pages = self.opts.pagination
        request: Request | None = self.first_request()
        seen: set[str] = set()
        first: FetchResult | None = None
        for number in range(1, pages.max_pages + 1):
            assert request is not None  # the loop ends when there is none
            seen.add(request.key)
            try:
                got = await self.fetch(http, request, args, first=number == 1)
                if got.not_modified:
                    return PollResult(
                        not_modified=True,
                        min_interval=got.max_age,
                        permanent_redirect=got.permanent_redirect,
                    )
                page = await self.parse(got.content, got.url, got.content_type)
            except ConnectorError as err:
                if number == 1:
                    raise
                self.failed(number, err)
                break
            first = first or got
            self.take(page, number)
            request = self.next_request(page, got)
            if request is None:
                break
            if request.key in seen:
                self.notes.append(f"page {number + 1} repeats an earlier page; stopped there")
                break
            if self.read >= self.opts.max_items:
                self.capped(f"{self.read} items (max_items)")
                break
        else:
            self.capped(f"{pages.max_pages} pages (pagination.max_pages)")
        assert first is not None  # page 1 either came or raised
        return self.result(first)

    async def read_file(self, path: Path) -> PollResult:
        """A local JSON file (config-file sources only), read whole."""
        version, body = await read_local(path, self.state.get("version"), self.ctx)
        if body is None:
            return PollResult(not_modified=True)
        page = await self.parse(body, (self.ctx.base_dir / path).resolve().as_uri(), "")
        self.take(page, 1)
        result = self.result(None)
        return replace(result, state={**(result.state or {}), "version": version})

    async def parse(self, body: bytes, url: str, content_type: str) -> Page:
        """read_page in the parser pool; its ParseError names the source.
        (`self.read == 0`: no page read yet, where `items` must select something.)"""
        room = self.opts.max_items - self.read
        reader = self.connector.reader
        try:
            page: Page = await self.ctx.run_cpu(
                read_page, reader, body, url, content_type, room, self.check, self.read == 0
            )
        except ParseError as err:
            raise ParseError(f"{self.ctx.source_id}: {err}") from None
        return page

    async def fetch(
        self, http: Fetcher, request: Request, args: dict[str, Any], *, first: bool
    ) -> FetchResult:
        # Only a plain GET of the first page may be answered "not modified"
        # (an incremental request changes with every poll), and not when
        # rebaselining: that would put it off until the next change.
        cached = self.state if first and self.conditional and not self.rebaseline else {}
        return await http.request(
            request.method,
            request.url,
            json=request.body,
            etag=cached.get("etag"),
            last_modified=cached.get("last_modified"),
            **args,
        )

    @property
    def conditional(self) -> bool:
        return self.opts.method == "GET" and not self.opts.incremental.enabled

    def failed(self, number: int, err: ConnectorError) -> None:
        """A page after the first failed: keep what came before, and keep
        the incremental state where it was, so the next poll asks again."""
        self.advance = False
        self.retry_after = err.retry_after
        self.notes.append(
            f"page {number} failed ({err}); the pages before it were stored, "
            "the rest is asked for again next poll"
        )

    def capped(self, what: str) -> None:
        # Only an incremental source loses sight of something at a cap; a
        # plain listing is meant to be read only so far.
        if not self.opts.incremental.enabled:
            return
        old = self.state.get("since")
        if self.opts.incremental.since and old is not None and later(old, self.since) == old:
            # The next poll would ask for the same items again, for ever.
            self.notes.append(
                f"stopped after {what} without getting past since {str(old)[:40]!r}: more "
                "items than one poll reads share that value or its overlap; raise the cap"
            )
            return
        self.notes.append(f"stopped after {what}; the next poll goes on from there")

    def take(self, page: Page, number: int) -> None:
        self.events.extend(page.events)
        suffix = f" on page {number}" if number > 1 else ""
        room = max(MAX_PROBLEMS - len(self.problems), 0)
        self.problems.extend(f"{p}{suffix}" for p in page.problems[:room])
        self.unmapped += page.unmapped
        self.read += page.read
        self.held += page.held
        self.since = later(self.since, page.since)
        if _keepable(page.cursor):
            self.cursor = page.cursor
        self.matched |= page.matched

    # --- what to ask for

    def values(self) -> dict[str, Any]:
        """The placeholders' values for this poll."""
        return {"since": self.since_value(), "cursor": self.state.get("cursor")}

    def since_value(self) -> Any:
        inc = self.opts.incremental
        raw = self.state.get("since")
        if raw is None:
            return self.initial_since()
        key = since_key(raw)
        when = parse_time(raw) if key is not None and key[0] == 1 else None
        if when is None or (inc.overlap is None and inc.since_format is None):
            return raw  # as the API wrote it, which it reads best
        if inc.overlap:
            when -= timedelta(seconds=parse_duration(inc.overlap))
        return self.date_text(when)

    def initial_since(self) -> Any:
        initial = self.opts.incremental.initial_since
        if not isinstance(initial, str):
            return initial
        try:
            ago = parse_duration(initial)
        except ValueError:
            return initial  # a value in the API's own format
        return self.date_text(self.ctx.now - timedelta(seconds=ago))

    def date_text(self, when: datetime) -> str:
        fmt = self.opts.incremental.since_format
        if fmt:
            return when.strftime(fmt)
        return when.isoformat().replace("+00:00", "Z")

    def first_request(self) -> Request:
        opts, inc, pages = self.opts, self.opts.incremental, self.opts.pagination
        values = self.values()
        if inc.since_param and values["since"] is not None:
            self.fixed[inc.since_param] = values["since"]
        if inc.cursor_param and values["cursor"] is not None:
            self.fixed[inc.cursor_param] = values["cursor"]
        if pages.size_param and pages.size is not None:
            self.fixed[pages.size_param] = pages.size
        self.params = fill(opts.params, values)
        self.body = fill(opts.body, values) if opts.body is not None else None
        if pages.type in ("offset", "page"):
            default = 0 if pages.type == "offset" else 1
            self.position = pages.start if pages.start is not None else default
        return self.request()

    def request(self) -> Request:
        """The request for `position` (None: the first page of a cursor)."""
        sent = dict(self.fixed)
        param = self.opts.pagination.param
        if param and self.position is not None:
            sent[param] = self.position
        if self.opts.method == "GET":
            return Request("GET", with_query(self.opts.url, {**self.params, **sent}))
        body = json.loads(json.dumps(self.body)) if self.body is not None else {}
        for name, value in sent.items():
            set_path(body, name, value)
        url = with_query(self.opts.url, self.params)
        return Request("POST", url, body if body or self.body is not None else None)

    def next_request(self, page: Page, got: FetchResult) -> Request | None:
        pages = self.opts.pagination
        if pages.type == "none" or page.held == 0 or not page.more:
            return None
        if pages.type == "link":
            return self.follow(link_next(got.headers.get("Link")), got.url)
        if pages.type == "next_url":
            return self.follow(page.next if isinstance(page.next, str) else None, got.url)
        if pages.type == "cursor":
            if isinstance(page.next, bool) or not isinstance(page.next, str | int | float):
                return None
            if page.next == "":
                return None
            self.position = page.next
            return self.request()
        return self.next_number(page)

    def next_number(self, page: Page) -> Request | None:
        """Offset and page pagination: on to the next, unless this was the last."""
        pages = self.opts.pagination
        if pages.size is not None and page.held < pages.size:
            return None  # a short page is the last
        if pages.type == "offset":
            self.position += page.held
            done = page.total is not None and self.position >= page.total
        else:
            self.position += 1
            done = page.total is not None and self.held >= page.total
        return None if done else self.request()

    def follow(self, target: str | None, base: str) -> Request | None:
        """A next page's URL (from a Link header or a field), if it may be followed."""
        if not target or not target.strip():
            return None
        try:
            url = urljoin(base, target.strip())
        except ValueError:
            self.notes.append(f"the next page's address is no URL: {target[:80]!r}")
            return None
        if not same_origin(self.opts.url, url):
            self.notes.append(
                f"the next page is on another server ({redact(url)}); not followed, "
                "so the source's credentials stay with its url"
            )
            return None
        return Request("GET", url)

    # --- the outcome

    def result(self, first: FetchResult | None) -> PollResult:
        source = self.ctx.source_id
        mapped = Mapped(self.events, self.problems, self.unmapped, self.read)
        if not self.events and self.unmapped:
            raise ParseError(describe_problems(source, mapped))
        self.check_ids()
        notes = [*self.unmatched(), *self.notes]
        warning = None
        if self.problems:
            warning = "; ".join([describe_problems(source, mapped), *notes])
        elif notes:
            warning = f"{source}: " + "; ".join(notes)
        hints = [h for h in (first and first.max_age, self.retry_after) if h]
        return PollResult(
            events=self.events,
            state=self.new_state(first),
            min_interval=max(hints) if hints else None,
            permanent_redirect=first.permanent_redirect if first else None,
            rebaseline=self.rebaseline,
            warning=warning,
        )

    def check_ids(self) -> None:
        """An `id` no item has is a mistake: guessed identities would
        duplicate every item once it is fixed."""
        mapping = self.connector.reader.mapping
        spec = mapping.overrides.get("id") or mapping.fields.get("id")
        if spec is None or not self.events or any(e.external_id for e in self.events):
            return
        raise ParseError(
            f"{self.ctx.source_id}: fields.id ({spec.source}) matched nothing in any of "
            f"the {self.read} items; check it against the response"
        )

    def unmatched(self) -> list[str]:
        """On the first poll under a mapping: the source's own fields no item had."""
        if not self.check or not self.read:
            return []
        overrides = self.connector.reader.mapping.overrides
        missing = [n for n in overrides if n not in self.matched and n != "id"]
        return [
            f"fields.{name} ({overrides[name].source}) matched nothing in any of "
            f"the {self.read} items"
            for name in missing
        ]

    def new_state(self, first: FetchResult | None) -> JSONObject:
        fingerprint = self.connector.fingerprint
        state: JSONObject = {"mapping": fingerprint}
        if self.read or not self.check:
            state["checked"] = fingerprint
        if first is not None and self.conditional:
            state.update(
                (k, v)
                for k, v in (("etag", first.etag), ("last_modified", first.last_modified))
                if v
            )
        inc = self.opts.incremental
        since = later(self.state.get("since"), self.since if self.advance else None)
        if inc.since is not None and since is not None:
            state["since"] = since
        cursor = self.cursor if self.advance and self.cursor is not None else None
        cursor = cursor if cursor is not None else self.state.get("cursor")
        if inc.cursor is not None and cursor is not None:
            state["cursor"] = cursor
        return state
