"""Stream queries: one parser, one syntax tree, two back-ends that must agree.

The language (docs/queries.md is the user's guide, with the exact rules):

    merger  "merger talks"        free text: words, and phrases in quotes
    source:wiki,jira              a field; a comma list means any of its values
    author:"Jane Doe"             a quoted value may hold spaces
    from:alice  to:@example.org   mail-style: sender; To/Cc recipients
    -draft  -(a OR b)             negation of a term or of a group
    a b  a OR b  (a OR b) c       side by side means AND; OR; parentheses
    since:7d  until:2026-11-01    bounds on `published`, relative to `now`

Precedence: `-` binds tightest, then AND, then OR. Fields: source, kind, verb,
type (the object type), author, tag, from, to, since, until; names are
case-insensitive.

`EventFilter.where()` compiles the tree to SQL (history, search, feeds);
`EventFilter.matches()` evaluates it in memory (live events). They must
select the same events, which tests/unit/test_query_property.py checks on a
real store. Free text and author names match by tokens (aggregator.search);
the other field values fold ASCII letters only, because SQLite's lower() does.

`from:` and `to:` match email addresses (issue 12): a whole address
(`alice@example.org`) must equal one, and anything else is a substring
(`alice`, `@example.org`) of one -- or, for `from:`, of the sender's name.
`from:` reads the actor's email and name (any kind of event); `to:` reads
`extra["to"]` and `extra["cc"]`, lists of addresses that mail events keep.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Literal, TypeAlias

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    case,
    cast,
    column,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    true,
)

from aggregator.durations import parse_duration
from aggregator.exceptions import QueryError
from aggregator.search import (
    Columns,
    Phrase,
    TextSearch,
    event_columns,
    has_phrase,
    tokenize,
)
from aggregator.types import Event

VALUE_FIELDS = ("source", "kind", "verb", "type", "author", "tag", "from", "to")
RECIPIENTS = ("to", "cc")  # the keys of `Event.extra` that `to:` reads: lists of addresses
TIME_FIELDS = ("since", "until")
FIELDS = VALUE_FIELDS + TIME_FIELDS

_ASCII_UPPER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """ASCII-only lower case: what SQLite's lower() does, so SQL and memory agree."""
    return text.translate(_ASCII_UPPER)


def is_address(value: str) -> bool:
    """Whether a `from:`/`to:` value is a whole address (something on each side
    of an `@`), which must equal an address rather than occur in one: so that
    `to:team@example.org` is not also `devteam@example.org`."""
    return "@" in value[1:-1]


# --- the syntax tree ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """Free text: the tokens of one word or quoted phrase, which must occur
    consecutively in one indexed column (see aggregator.search)."""

    tokens: Phrase


@dataclass(frozen=True, slots=True)
class Term:
    """A field and its values, any of which may match. Values are normalised:
    ASCII-folded, and for `author` the name's tokens joined by single spaces."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Time:
    """`since`: published at or after `at`; `until`: published before `at`.
    `at` is aware UTC, resolved at parse time (relative bounds included)."""

    field: Literal["since", "until"]
    at: datetime


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node: TypeAlias = Text | Term | Time | Not | And | Or
EVERYTHING = And(())


# --- the scanner -----------------------------------------------------------------

_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):")
_SURROGATE = re.compile("[\ud800-\udfff]")  # from JSON's "\ud800": no character at all
# Bounds that keep every query cheap to parse, compile and run (and within
# Python's recursion and SQLite's expression depth limits).
MAX_QUERY = 2000  # characters: a query is typed or saved, never generated in bulk
MAX_TERMS = 64  # words, phrases and field values
MAX_DEPTH = 32
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ENDS_WORD = frozenset('()"')
_ENDS_VALUE = frozenset('(),"')

TokenKind: TypeAlias = Literal["(", ")", "-", "OR", "word", "phrase", "field"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: TokenKind
    position: int
    text: str = ""  # a word, a phrase, or a field's name
    values: tuple[tuple[str, int], ...] = ()  # a field's values and their positions


def _quoted(query: str, start: int) -> tuple[str, int]:
    """The string opening at `start` (backslash escapes `"` and itself) and the
    position after its closing quote."""
    chars: list[str] = []
    i = start + 1
    while i < len(query):
        char = query[i]
        if char == '"':
            return "".join(chars), i + 1
        if char == "\\" and i + 1 < len(query) and query[i + 1] in '"\\':
            i += 1
            char = query[i]
        chars.append(char)
        i += 1
    raise QueryError("unclosed quote", start)


def _bare(query: str, start: int, ends: frozenset[str]) -> int:
    i = start
    while i < len(query) and not query[i].isspace() and query[i] not in ends:
        i += 1
    return i


def _values(query: str, start: int, name: str) -> tuple[tuple[tuple[str, int], ...], int]:
    values: list[tuple[str, int]] = []
    i = start
    while True:
        if i < len(query) and query[i] == '"':
            value, end = _quoted(query, i)
        else:
            end = _bare(query, i, _ENDS_VALUE)
            value = query[i:end]
        if not value:
            raise QueryError(f"{name}: needs a value", i)
        values.append((value, i))
        i = end
        if i < len(query) and query[i] == ",":
            i += 1
            continue
        return tuple(values), i


def _scan(query: str) -> list[_Token]:
    if bad := _SURROGATE.search(query):
        raise QueryError("not a character (a lone surrogate)", bad.start())
    if (nul := query.find("\x00")) >= 0:  # no stored text holds one (decide.storable)
        raise QueryError("a NUL character", nul)
    tokens: list[_Token] = []
    i = 0
    while i < len(query):
        char = query[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token("(" if char == "(" else ")", i))
            i += 1
        elif char == "-":
            if i + 1 == len(query) or query[i + 1].isspace() or query[i + 1] == ")":
                raise QueryError("- must come right before the term it excludes", i)
            tokens.append(_Token("-", i))
            i += 1
        elif char == '"':
            text, end = _quoted(query, i)
            tokens.append(_Token("phrase", i, text))
            i = end
        elif field := _FIELD.match(query, i):
            name = field.group(1).lower()
            if name not in FIELDS:
                known = ", ".join(f"{f}:" for f in FIELDS)
                raise QueryError(
                    f"unknown field {name!r} (known: {known}; quote text that has a colon)", i
                )
            values, end = _values(query, field.end(), name)
            tokens.append(_Token("field", i, name, values))
            i = end
        else:
            end = _bare(query, i, _ENDS_WORD)
            word = query[i:end]
            tokens.append(_Token("OR" if word == "OR" else "word", i, word))
            i = end
    return tokens


# --- the parser ---------------------------------------------------------------------


class _Parser:
    """Recursive descent: or := and ("OR" and)*; and := unary+;
    unary := "-" unary | "(" or ")" | term."""

    def __init__(self, query: str, now: datetime) -> None:
        # Bounded before any work: the parse and every live event's check
        # cost in proportion to the query (a websocket client sends any).
        if len(query) > MAX_QUERY:
            raise QueryError(f"a query is at most {MAX_QUERY} characters", MAX_QUERY)
        self.query = query
        self.now = now
        self.tokens = _scan(query)
        self.at = 0
        self.depth = 0
        terms = [
            position
            for t in self.tokens
            for position in ([p for _, p in t.values] if t.kind == "field" else [t.position])
            if t.kind in ("word", "phrase", "field")
        ]
        if len(terms) > MAX_TERMS:
            raise QueryError(f"too many terms (at most {MAX_TERMS})", terms[MAX_TERMS])

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            return EVERYTHING
        node = self.parse_or()
        token = self.peek()
        if token is not None:  # only a ")" stops parse_or early
            raise QueryError("unmatched )", token.position)
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while (token := self.peek()) is not None and token.kind == "OR":
            self.take()
            following = self.peek()
            if following is None or following.kind in ("OR", ")"):
                raise QueryError("OR needs a term on each side", token.position)
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self) -> Node:
        children: list[Node] = []
        while (token := self.peek()) is not None and token.kind not in ("OR", ")"):
            children.append(self.parse_unary())
        if not children:
            token = self.peek()
            if token is not None and token.kind == "OR":
                raise QueryError("OR needs a term on each side", token.position)
            # Only at the very start: "(" and OR check what follows them.
            raise QueryError("unmatched )", token.position if token else len(self.query))
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_unary(self) -> Node:
        token = self.take()
        if token.kind in ("-", "("):
            if self.depth == MAX_DEPTH:
                raise QueryError(f"nested too deeply (at most {MAX_DEPTH} levels)", token.position)
            self.depth += 1
            try:
                return self.nested(token)
            finally:
                self.depth -= 1
        if token.kind == "field":
            return self.field(token)
        return self.text(token)

    def nested(self, token: _Token) -> Node:
        """What the `-` or `(` at `token` governs."""
        following = self.peek()
        if token.kind == "-":
            if following is None or following.kind in ("OR", ")"):
                raise QueryError("- must come right before the term it excludes", token.position)
            return Not(self.parse_unary())
        if following is not None and following.kind == ")":
            raise QueryError("empty parentheses", token.position)
        if following is None:
            raise QueryError("unclosed parenthesis", token.position)
        node = self.parse_or()
        if self.peek() is None:
            raise QueryError("unclosed parenthesis", token.position)
        self.take()  # the ")": parse_or stops only there or at the end
        return node

    def text(self, token: _Token) -> Text:
        tokens = tuple(tokenize(token.text))
        if not tokens:
            what = "a phrase" if token.kind == "phrase" else "a word"
            raise QueryError(
                f"nothing to search for in {token.text!r}: {what} needs letters or digits",
                token.position,
            )
        return Text(tokens)

    def field(self, token: _Token) -> Node:
        name = token.text
        if name in TIME_FIELDS:
            if len(token.values) > 1:
                raise QueryError(f"{name}: takes one value", token.values[1][1])
            value, position = token.values[0]
            bound: Literal["since", "until"] = "since" if name == "since" else "until"
            return Time(bound, _instant(value, bound, self.now, position))
        values: list[str] = []
        for value, position in token.values:
            if name == "author":
                words = tokenize(value)
                if not words:
                    raise QueryError("author: needs a name with letters or digits", position)
                values.append(" ".join(words))
            else:
                values.append(fold(value))
        return Term(name, tuple(values))


def _instant(value: str, name: str, now: datetime, position: int) -> datetime:
    """A bound: an age before `now` (7d, 36h, 30m), a date (whole days, UTC) or
    an ISO date and time (UTC unless it says otherwise)."""
    try:
        try:
            return now - timedelta(seconds=parse_duration(value))
        except ValueError:
            pass
        if _DATE.fullmatch(value):
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            # until:2026-11-01 includes that day: it ends at the next midnight.
            return start + timedelta(days=1) if name == "until" else start
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            return instant.replace(tzinfo=UTC)
        return instant.astimezone(UTC)  # a far offset may overflow
    except (ValueError, OverflowError):
        raise QueryError(
            f"{name}: expects an age (7d, 36h, 30m), a date (2026-11-01) "
            f"or a date and time (2026-11-01T09:30), not {value!r}",
            position,
        ) from None


# --- rendering (the parser's inverse) ------------------------------------------------


def _needs_quotes(value: str) -> bool:
    return not value or any(c.isspace() or c in '(),"' for c in value)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(node: Node) -> str:
    """A query string that parses back to `node` (for a tree the parser makes)."""
    if isinstance(node, Text):
        word = " ".join(node.tokens)
        return _quote(word) if len(node.tokens) > 1 or _needs_quotes(word) else word
    if isinstance(node, Term):
        return f"{node.field}:" + ",".join(
            _quote(v) if _needs_quotes(v) else v for v in node.values
        )
    if isinstance(node, Time):
        return f"{node.field}:{node.at.isoformat()}"
    if isinstance(node, Not):
        inner = node.child
        return "-" + (f"({render(inner)})" if isinstance(inner, And | Or) else render(inner))
    if isinstance(node, Or):
        return " OR ".join(
            f"({render(c)})" if isinstance(c, Or) else render(c) for c in node.children
        )
    return " ".join(
        f"({render(c)})" if isinstance(c, And | Or) else render(c) for c in node.children
    )


# --- back-end 1: SQL ------------------------------------------------------------------

# Each event's folded tags (aggregator/store/schema.py, migration 0010).
_EVENT_TAGS = table("event_tags", column("tag", String), column("event_id"))

# A field's event attribute, which is also its column on the events table.
_FIELD_OF = {"source": "source_id", "kind": "kind", "verb": "verb", "type": "object_type"}


@dataclass(frozen=True, slots=True)
class _Sql:
    events: Table
    search: TextSearch
    sources: Mapping[str, tuple[str, ...]]  # folded name -> the ids it names
    after: int | None = None  # the caller's lower bound on event ids, for the indexes
    common_tags: frozenset[str] = frozenset()  # see EventFilter.where

    def lower(self, text: ColumnElement[str]) -> ColumnElement[str]:
        """ASCII-only lower case, as fold(). PostgreSQL's lower() folds more,
        but not under the C collation; and it costs half what translate() did
        (a tag: page 24 -> 12 ms). Migration 0009 keeps statistics on exactly
        these expressions for kind, verb and type."""
        if self.search.dialect == "postgresql":
            return func.lower(text.collate("C"))
        return func.lower(text)

    def of(self, node: Node) -> ColumnElement[bool]:
        events, search = self.events, self.search
        if isinstance(node, And | Or):
            any_of = isinstance(node, Or)
            # Free-text siblings become one full-text condition: one index lookup.
            phrases = [c.tokens for c in node.children if isinstance(c, Text)]
            clauses = [self.of(c) for c in node.children if not isinstance(c, Text)]
            if phrases:
                clauses.insert(0, search.match(events, phrases, any_of=any_of, after=self.after))
            return or_(false(), *clauses) if any_of else and_(true(), *clauses)
        if isinstance(node, Not):
            return not_(self.of(node.child))
        if isinstance(node, Text):
            return search.match(events, [node.tokens], after=self.after)
        if isinstance(node, Time):
            if node.field == "since":
                return events.c.published >= node.at
            return events.c.published < node.at
        values = node.values
        if node.field == "source":
            # Exact ids, not a subquery: the planner then walks the events'
            # (source_id, id) index instead of every event newest first.
            exact = sorted({i for v in values for i in self.sources.get(v, ())})
            return events.c.source_id.in_(exact) if exact else false()
        if node.field == "author":
            phrases = [tuple(v.split(" ")) for v in values]
            return search.match(events, phrases, field="author", any_of=True, after=self.after)
        if node.field == "tag":
            tagged = select(_EVENT_TAGS.c.event_id).where(_EVENT_TAGS.c.tag.in_(values))
            if not self.common_tags.isdisjoint(values):
                # Walk the events, looking each up: a page of a tag on 20% of
                # 1,000,000 events in 0.1 ms, where listing them took 45.
                return exists(tagged.where(_EVENT_TAGS.c.event_id == events.c.id))
            # List the tag's events from its index: a rare tag's page or
            # count in under 1 ms, where walking the events took 30 to 60.
            if self.after is not None:
                tagged = tagged.where(_EVENT_TAGS.c.event_id > self.after)
            return events.c.id.in_(tagged)
        if node.field == "from":
            # coalesce: a missing sender is "", never NULL, so that -from: keeps it.
            email = self.lower(func.coalesce(events.c.actor_email, ""))
            name = self.lower(func.coalesce(events.c.actor_name, ""))
            in_name = (_has(name, v) for v in values if not is_address(v))
            return or_(_is_one_of(email, values), *in_name)
        if node.field == "to":
            listed = or_(false(), *(self.recipients(key, values) for key in RECIPIENTS))
            if not all(map(_verbatim_in_json, values)):
                return listed
            # First a condition every match meets and most events fail
            # cheaply: the value occurs in the JSON text. It spares parsing
            # the JSON of nearly every event a rare recipient is not in
            # (200,000 events: 330 ms -> 55 ms).
            text = self.lower(cast(events.c.extra, String))
            return and_(or_(false(), *(_has(text, v) for v in values)), listed)
        return self.lower(events.c[_FIELD_OF[node.field]]).in_(values)

    def recipients(self, key: str, values: tuple[str, ...]) -> ColumnElement[bool]:
        """Whether one of the strings in the list `extra[key]` is or contains one
        of `values`. Only a list counts, as in memory: json_each would also walk
        a lone string or an object's values (PostgreSQL: jsonb_typeof = 'array'
        and jsonb_array_elements_text)."""
        extra = self.events.c.extra
        if self.search.dialect == "postgresql":
            found = extra.op("->")(key)
            # json_array_elements fails on anything but a list: give it [] then.
            items = case(
                (func.json_typeof(found) == "array", found), else_=literal_column("'[]'::json")
            )
            item = func.json_array_elements(items).table_valued("value")
            return exists(
                select(literal(1))
                .select_from(item)
                .where(
                    func.json_typeof(item.c.value) == "string",  # not a number, null, ...
                    _is_one_of(self.lower(item.c.value.op("#>>")(literal_column("'{}'"))), values),
                )
            )
        path = f"$.{key}"
        item = func.json_each(extra, path).table_valued("value", "type")
        return exists(
            select(literal(1))
            .select_from(item)
            .where(
                func.json_type(extra, path) == "array",
                item.c.type == "text",  # not a number, null, list or object
                _is_one_of(self.lower(item.c.value), values),
            )
        )


def _verbatim_in_json(value: str) -> bool:
    """Whether `value` is written as it is inside a JSON string: no character
    JSON escapes (json.dumps escapes `"`, `\\`, control and non-ASCII ones)."""
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def _is_one_of(address: ColumnElement[str], values: tuple[str, ...]) -> ColumnElement[bool]:
    """`address` (folded) equals a whole address of `values` or contains another value."""
    return or_(false(), *(address == v if is_address(v) else _has(address, v) for v in values))


def _has(text: ColumnElement[str], part: str) -> ColumnElement[bool]:
    """`part` occurs in `text`: LIKE with `%`, `_` and the escape character escaped
    (SQLite's LIKE ignores ASCII case; `text` and `part` are folded already)."""
    return text.contains(part, autoescape=True)


# --- back-end 2: memory -------------------------------------------------------------

# The tree compiles once into nested closures: a live event is checked once per
# subscriber, a thousand times over, so the walk must cost no isinstance
# chain, and what every subscriber asks of an event (its folded values, its
# tokens) is worked out once.

Predicate: TypeAlias = Callable[[Event], bool]
_fold_once = lru_cache(maxsize=4096)(fold)  # source ids, kinds, verbs, tags: few
_last_columns: tuple[Event | None, Columns] = (None, ((), (), ()))


def _columns_of(event: Event) -> Columns:
    """event_columns(event), kept for the event last asked about: a fan-out
    asks about one event for every subscriber in turn."""
    global _last_columns  # one tuple, swapped whole: atomic under the GIL
    last = _last_columns
    if last[0] is event:
        return last[1]
    columns = event_columns(event)
    _last_columns = (event, columns)
    return columns


def _compile(node: Node) -> Predicate:
    if isinstance(node, And | Or):
        parts = tuple(_compile(c) for c in node.children)
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:  # the common case, without a generator per call
            first, second = parts
            if isinstance(node, And):
                return lambda e: first(e) and second(e)
            return lambda e: first(e) or second(e)
        if isinstance(node, And):
            return lambda e: all(p(e) for p in parts)
        return lambda e: any(p(e) for p in parts)
    if isinstance(node, Not):
        inner = _compile(node.child)
        return lambda e: not inner(e)
    if isinstance(node, Text):
        tokens = node.tokens
        return lambda e: has_phrase(_columns_of(e), tokens)
    if isinstance(node, Time):
        at = node.at
        if node.field == "since":
            return lambda e: e.published >= at
        return lambda e: e.published < at
    values = frozenset(node.values)
    if node.field == "author":
        phrases = tuple(tuple(v.split(" ")) for v in node.values)
        return lambda e: any(has_phrase(_columns_of(e), p, "author") for p in phrases)
    if node.field == "tag":
        return lambda e: any(_fold_once(t) in values for t in e.tags)
    if node.field in ("from", "to"):
        return _address_predicate(node.field, node.values)
    get = attrgetter(_FIELD_OF[node.field])
    return lambda e: _fold_once(get(e)) in values


def _recipients_of(event: Event) -> list[str]:
    """The folded addresses in `extra["to"]` and `extra["cc"]`: strings in lists only."""
    found: list[str] = []
    for key in RECIPIENTS:
        addresses = event.extra.get(key)
        if isinstance(addresses, list):
            found.extend(fold(a) for a in addresses if isinstance(a, str))
    return found


def _address_predicate(name: str, values: tuple[str, ...]) -> Predicate:
    whole = frozenset(v for v in values if is_address(v))
    parts = tuple(v for v in values if not is_address(v))

    def found(address: str) -> bool:
        return address in whole or any(p in address for p in parts)

    if name == "to":
        return lambda e: any(found(a) for a in _recipients_of(e))

    def sent_by(event: Event) -> bool:
        # Names and addresses are many: fold() each time rather than crowd _fold_once.
        if found(fold(event.actor.email or "")):
            return True
        sender = fold(event.actor.name or "")
        return any(p in sender for p in parts)

    return sent_by


# --- the public face ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A parsed query. `EventFilter()` matches every event."""

    root: Node = EVERYTHING
    _predicate: Predicate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_predicate", _compile(self.root))

    @classmethod
    def parse(cls, query: str | None, now: datetime | None = None) -> EventFilter:
        """Parse `query`; relative bounds (since:7d) count back from `now`
        (aware UTC; the current time when None), once, here, so that SQL and
        memory agree however long the filter lives. Raises QueryError."""
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        return cls(_Parser(query or "", now or datetime.now(UTC)).parse())

    def __str__(self) -> str:
        return render(self.root)

    def where(
        self,
        events: Table,
        search: TextSearch,
        *,
        source_ids: Iterable[str],
        after: int | None = None,
        common_tags: Iterable[str] = (),
    ) -> ColumnElement[bool]:
        """The SQL condition on the `events` table. `search` is the store's
        full-text back-end; `source_ids` every source id there is (needed
        only when `names_sources()`), so that `source:` terms, which ignore
        case, compile to exact ids. `after`: the caller selects only events
        of higher ids, and full-text and tag lookups start there too.
        `common_tags`: those of `tags()` on so many events (above `after`)
        that walking the events and looking each up beats listing the tag's."""
        known: dict[str, tuple[str, ...]] = {}
        for source_id in source_ids:
            known[fold(source_id)] = (*known.get(fold(source_id), ()), source_id)
        return _Sql(events, search, known, after, frozenset(common_tags)).of(self.root)

    def tags(self) -> frozenset[str]:
        """The (folded) values of its `tag:` terms."""
        found: set[str] = set()

        def note(node: Node) -> bool:
            if isinstance(node, Term) and node.field == "tag":
                found.update(node.values)
            return False  # on to every node

        _any_node(self.root, note)
        return frozenset(found)

    def names_sources(self) -> bool:
        """Whether a `source:` term is in the query (see `where`'s `source_ids`)."""
        return _any_node(self.root, lambda n: isinstance(n, Term) and n.field == "source")

    def is_empty(self) -> bool:
        """Whether it selects every event (no term at all)."""
        return isinstance(self.root, And) and not self.root.children

    def bounded_in_time(self) -> bool:
        """Whether a `since:` or `until:` term is in the query: which events
        it selects then changes as time passes, not only as events arrive."""
        return _any_node(self.root, lambda n: isinstance(n, Time))

    def matches(self, event: Event) -> bool:
        """The same condition, in memory, for live events."""
        return self._predicate(event)

    def ranking_terms(self) -> tuple[tuple[Phrase, ...], EventFilter | None]:
        """What a relevance order ranks by: the free-text phrases every match
        contains (the top-level AND's) and this filter without them -- the
        caller may join on their ranking instead of filtering on them. When
        there are none: the phrases not excluded by a `-`, any of which a
        match may contain, and None (keep the whole filter)."""
        top = self.root.children if isinstance(self.root, And) else (self.root,)
        required = tuple(n.tokens for n in top if isinstance(n, Text))
        if required:
            rest = tuple(n for n in top if not isinstance(n, Text))
            return required, EventFilter(rest[0] if len(rest) == 1 else And(rest))
        optional: list[Phrase] = []
        _positive_text(self.root, optional)
        return tuple(optional), None


def _any_node(node: Node, test: Callable[[Node], bool]) -> bool:
    if test(node):
        return True
    if isinstance(node, Not):
        return _any_node(node.child, test)
    if isinstance(node, And | Or):
        return any(_any_node(c, test) for c in node.children)
    return False


def _positive_text(node: Node, found: list[Phrase]) -> None:
    if isinstance(node, Text):
        found.append(node.tokens)
    elif isinstance(node, And | Or):
        for child in node.children:
            _positive_text(child, found)
