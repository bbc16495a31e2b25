"""The query language: grammar, precedence, fields, time bounds, and errors
that point at the exact character."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import parse_config
from aggregator.decide import prepare
from aggregator.exceptions import QueryError
from aggregator.filters import (
    EVERYTHING,
    FIELDS,
    And,
    EventFilter,
    Node,
    Not,
    Or,
    Term,
    Text,
    Time,
    render,
)
from aggregator.store import Store
from aggregator.types import Actor, Event, EventData
from tests.stores import store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs"


def tree(query: str) -> Node:
    return EventFilter.parse(query, now=NOW).root


def w(*tokens: str) -> Text:
    return Text(tokens)


def event(**fields: object) -> Event:
    base = Event(
        id=1, source_id="wiki", kind="feed", external_id="x", content_hash="h", verb="Create",
        object_type="Article", title="Merger news", summary="", content_html="", url=None,
        actor=Actor("Jane Doe"), published=NOW, updated=None, tags=("Urgent",), thread_id=None,
        extra={}, audience=(), ingested_at=NOW,
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


# --- grammar -----------------------------------------------------------------------


@pytest.mark.parametrize("query", [None, "", "   \t "])
def test_an_empty_query_matches_everything(query: str | None) -> None:
    assert EventFilter.parse(query).root == EVERYTHING == EventFilter().root
    assert EventFilter.parse(query).matches(event())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("merger", w("merger")),
        ("MERGER", w("merger")),
        ("merger talks", And((w("merger"), w("talks")))),
        ('"merger talks"', w("merger", "talks")),
        ("e-mail", w("e", "mail")),  # a word of several tokens is a phrase
        ("snake_case", w("snake", "case")),  # "_" separates, as in FTS5
        ("Café", w("cafe")),
        ('"say \\"hi\\""', w("say", "hi")),
        ("or", w("or")),  # only uppercase OR is the keyword
        ("a or b", And((w("a"), w("or"), w("b")))),
        ("10:30", w("10", "30")),  # not a field: names start with a letter
    ],
)
def test_free_text(query: str, expected: Node) -> None:
    assert tree(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("source:wiki", Term("source", ("wiki",))),
        ("SOURCE:Wiki", Term("source", ("wiki",))),
        ("source:wiki,jira", Term("source", ("wiki", "jira"))),
        ("kind:Feed", Term("kind", ("feed",))),
        ("verb:Update", Term("verb", ("update",))),
        ("type:Issue,Page", Term("type", ("issue", "page"))),
        ("tag:urgent", Term("tag", ("urgent",))),
        ('tag:"a,b",c', Term("tag", ("a,b", "c"))),
        ('tag:"two words"', Term("tag", ("two words",))),
        ('tag:"say \\"x\\""', Term("tag", ('say "x"',))),
        ("tag:Ärger", Term("tag", ("Ärger",))),  # ASCII folding only
        ("author:jane", Term("author", ("jane",))),
        ('author:"Jane Doe",Zoë', Term("author", ("jane doe", "zoe"))),
        ('Author:"Doe, Jane"', Term("author", ("doe jane",))),
    ],
)
def test_fields(query: str, expected: Node) -> None:
    assert tree(query) == expected


def test_the_design_example() -> None:
    query = 'source:wiki,jira author:"Jane Doe" tag:urgent merger -draft since:7d'
    assert tree(query) == And(
        (
            Term("source", ("wiki", "jira")),
            Term("author", ("jane doe",)),
            Term("tag", ("urgent",)),
            w("merger"),
            Not(w("draft")),
            Time("since", NOW - timedelta(days=7)),
        )
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a b OR c", Or((And((w("a"), w("b"))), w("c")))),
        ("a OR b c", Or((w("a"), And((w("b"), w("c")))))),
        ("a OR b OR c", Or((w("a"), w("b"), w("c")))),
        ("-a b", And((Not(w("a")), w("b")))),
        ("-a OR b", Or((Not(w("a")), w("b")))),
        ("--a", Not(Not(w("a")))),
        ("a (b OR c)", And((w("a"), Or((w("b"), w("c")))))),
        ("(a OR b) -(c d)", And((Or((w("a"), w("b"))), Not(And((w("c"), w("d"))))))),
        ("((a))", w("a")),
        ("(a b) c", And((And((w("a"), w("b"))), w("c")))),
        ("-source:wiki", Not(Term("source", ("wiki",)))),
        ('-"a b"', Not(w("a", "b"))),
        ("(source:wiki)", Term("source", ("wiki",))),
    ],
)
def test_precedence_not_and_or(query: str, expected: Node) -> None:
    assert tree(query) == expected


@pytest.mark.parametrize(
    ("query", "at"),
    [
        ("since:7d", NOW - timedelta(days=7)),
        ("since:36h", NOW - timedelta(hours=36)),
        ("since:30m", NOW - timedelta(minutes=30)),
        ("since:1h30m", NOW - timedelta(minutes=90)),
        ("since:2w", NOW - timedelta(weeks=2)),
        ("since:2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("since:2026-11-01T09:30", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("since:2026-11-01T09:30Z", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("since:2026-11-01T09:30:00+01:00", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_since(query: str, at: datetime) -> None:
    assert tree(query) == Time("since", at)


@pytest.mark.parametrize(
    ("query", "at"),
    [
        ("until:7d", NOW - timedelta(days=7)),
        # A date includes that whole day (UTC): the bound is the next midnight.
        ("until:2026-11-01", datetime(2026, 11, 2, tzinfo=UTC)),
        ("until:2026-11-01T09:30", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_until(query: str, at: datetime) -> None:
    assert tree(query) == Time("until", at)


def test_relative_bounds_are_resolved_once_at_parse_time() -> None:
    flt = EventFilter.parse("since:1h", now=NOW)
    assert flt.matches(event(published=NOW - timedelta(minutes=59)))
    assert not flt.matches(event(published=NOW - timedelta(minutes=61)))
    assert EventFilter.parse("since:1h").root != flt.root  # the clock, not NOW


def test_bounds_since_inclusive_until_exclusive() -> None:
    at = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert EventFilter.parse("since:2026-11-01T09:30").matches(event(published=at))
    assert not EventFilter.parse("until:2026-11-01T09:30").matches(event(published=at))
    day = EventFilter.parse("since:2026-11-01 until:2026-11-01")
    assert day.matches(event(published=datetime(2026, 11, 1, 23, 59, tzinfo=UTC)))
    assert not day.matches(event(published=datetime(2026, 11, 2, tzinfo=UTC)))
    assert not day.matches(event(published=datetime(2026, 10, 31, 23, 59, tzinfo=UTC)))


# --- what each field matches (in memory; the property test proves SQL agrees) --------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("source:WIKI", True),
        ("source:wik", False),
        ("kind:FEED", True),
        ("verb:create", True),
        ("type:article", True),
        ("type:note", False),
        ("tag:urgent", True),  # a whole tag, any ASCII case
        ("tag:urg", False),
        ("author:jane", True),  # a word of the name
        ("author:JANE", True),
        ("author:jan", False),  # not a part of a word
        ('author:"jane doe"', True),
        ('author:"doe jane"', False),  # a phrase: in this order
        ("author:merger", False),  # only the author's name
        ("jane", True),  # free text also searches the author's name
        ('"news jane"', False),  # a phrase stays within one field
        ("merger -draft", True),
        ("merger -news", False),
        ("draft OR news", True),
        ("-(draft OR news)", False),
        ("source:jira OR tag:urgent", True),
    ],
)
def test_matching(query: str, expected: bool) -> None:
    assert EventFilter.parse(query, now=NOW).matches(event()) is expected


def test_field_values_fold_ascii_only() -> None:
    # What SQLite's lower() does, so that SQL and memory agree.
    assert EventFilter.parse("tag:ÄRGER").matches(event(tags=("Ärger",)))
    assert not EventFilter.parse("tag:ärger").matches(event(tags=("Ärger",)))


def test_free_text_folds_case_and_diacritics() -> None:
    flt = EventFilter.parse("resume zoe")
    assert flt.matches(event(title="Résumé", actor=Actor("Zoë")))
    assert EventFilter.parse("RÉSUMÉ").matches(event(title="resume"))


def test_an_author_missing_matches_no_author_term() -> None:
    assert not EventFilter.parse("author:jane").matches(event(actor=Actor()))
    assert EventFilter.parse("-author:jane").matches(event(actor=Actor()))


# --- rendering ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("Source:Wiki,JIRA   Merger", "source:wiki,jira merger"),
        ('author:"Jane  Doe" "a, b"', 'author:"jane doe" "a b"'),
        ("-(a OR b) (c d) (e OR f)", "-(a OR b) (c d) (e OR f)"),
        ("(a OR b) OR c", "(a OR b) OR c"),
        ('tag:"x,y",z', 'tag:"x,y",z'),
        ("until:2026-11-01", "until:2026-11-02T00:00:00+00:00"),
    ],
)
def test_render_is_canonical_and_parses_back(query: str, canonical: str) -> None:
    flt = EventFilter.parse(query, now=NOW)
    assert str(flt) == canonical
    assert EventFilter.parse(canonical, now=NOW) == flt
    assert render(flt.root) == canonical


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ('a "open', 2, "unclosed quote"),
        ('author:"Jane', 7, "unclosed quote"),
        ("(a OR b", 0, "unclosed parenthesis"),
        ("a (b (c)", 2, "unclosed parenthesis"),
        ("a)", 1, "unmatched )"),
        (")", 0, "unmatched )"),
        ("a () b", 2, "empty parentheses"),
        ("x  foo:bar", 3, "unknown field 'foo'"),
        ("Title:merger", 0, "unknown field 'title'"),
        ("https://example.org", 0, "unknown field 'https'"),
        ("source:", 7, "source: needs a value"),
        ("source: wiki", 7, "source: needs a value"),
        ("source:wiki,", 12, "source: needs a value"),
        ("source:,wiki", 7, "source: needs a value"),
        ('tag:""', 4, "tag: needs a value"),
        ("(kind:)", 6, "kind: needs a value"),
        ("since:yesterday", 6, "since: expects"),
        ("until:2026-13-01", 6, "until: expects"),
        ("since:2026-11-01T25:00", 6, "since: expects"),
        ("since:7d,8d", 9, "since: takes one value"),
        ("since:99999999999d", 6, "since: expects"),
        ("a OR", 2, "OR needs a term on each side"),
        ("OR a", 0, "OR needs a term on each side"),
        ("a OR OR b", 2, "OR needs a term on each side"),
        ("(a OR) b", 3, "OR needs a term on each side"),
        ("a -", 2, "- must come right before"),
        ("- a", 0, "- must come right before"),
        ("(a -)", 3, "- must come right before"),
        ("a -OR b", 2, "- must come right before"),
        ("!!!", 0, "nothing to search for"),
        ('a "!?"', 2, "nothing to search for"),
        ('author:"--"', 7, "author: needs a name"),
        ("a \ud800b", 2, "lone surrogate"),  # JSON can send one; SQLite cannot store it
        ("ab\x00c", 2, "a NUL character"),  # no stored text holds one; PostgreSQL refuses it
        (" ".join(["a"] * 65), 128, "too many terms (at most 64)"),
        ("tag:" + ",".join(["t"] * 65), 4 + 64 * 2, "too many terms (at most 64)"),
        ("a " * 30 + "tag:" + ",".join("t" * 35), 64 + 34 * 2, "too many terms"),
        ("-" * 33 + "a", 32, "nested too deeply"),
        ("(" * 33 + "a" + ")" * 33, 32, "nested too deeply"),
        ("(" * 4_000_000, 2000, "a query is at most 2000 characters"),
        ("a" * 2001, 2000, "a query is at most 2000 characters"),
        # A far offset takes the instant out of datetime's range: an error, not a crash.
        ("since:0001-01-01T00:00+01:00", 6, "since: expects"),
        ("until:9999-12-31T23:59-01:00", 6, "until: expects"),
    ],
)
def test_errors_point_at_the_culprit(query: str, position: int, message: str) -> None:
    with pytest.raises(QueryError) as err:
        EventFilter.parse(query)
    assert err.value.position == position
    assert message in str(err.value)


def test_the_limits_leave_room_for_real_queries() -> None:
    assert EventFilter.parse(" ".join(["a"] * 64)).root == And(tuple([w("a")] * 64))
    assert EventFilter.parse("-" * 32 + "a").root is not None
    assert EventFilter.parse("tag:" + ",".join(["t"] * 64)).root == Term("tag", ("t",) * 64)
    assert EventFilter.parse("a" * 2000).root == w("a" * 2000)
    with pytest.raises(ValueError, match="aware"):
        EventFilter.parse("since:1d", now=datetime(2026, 1, 1))


def test_every_field_is_documented() -> None:
    text = (DOCS / "queries.md").read_text(encoding="utf-8")
    for field in FIELDS:
        assert f"`{field}:" in text, f"{field}: is not in docs/queries.md"


# --- from: and to: (issue 12: mail keeps its recipients) ------------------------------


def mail(**fields: object) -> Event:
    """A mail event: the sender in `actor`, To and Cc in `extra`."""
    return event(
        kind="imap",
        actor=Actor("Alice Liddell", "alice@example.org"),
        extra={"to": ["team@lists.example.org", "bob@example.org"], "cc": ["carol@example.net"]},
        **fields,
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:alice", Term("from", ("alice",))),
        ("From:Alice@Example.ORG", Term("from", ("alice@example.org",))),
        ('from:"Doe, Jane",bob', Term("from", ("doe, jane", "bob"))),
        (
            "to:@example.org,team@lists.example.org",
            Term("to", ("@example.org", "team@lists.example.org")),
        ),
        ("-to:bob", Not(Term("to", ("bob",)))),
        ("from:alice to:team", And((Term("from", ("alice",)), Term("to", ("team",))))),
    ],
)
def test_from_and_to_parse_like_other_fields(query: str, expected: Node) -> None:
    assert tree(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # from: a part of the sender's address or name, ASCII case ignored
        ("from:alice", True),
        ("from:ALICE", True),
        ("from:lid", True),  # a part of a word of the name, unlike author:
        ('from:"alice liddell"', True),
        ("from:@example.org", True),
        ("from:example", True),
        ("from:alice@", True),
        ("from:bob", False),  # a recipient, not the sender
        # a whole address equals the sender's: no longer ones that contain it
        ("from:alice@example.org", True),
        ("from:Alice@Example.org", True),
        ("from:lice@example.org", False),
        ("from:alice@example.or", False),
        # to: a part of an address in To or Cc; a whole address equals one
        ("to:team", True),
        ("to:bob@example.org", True),
        ("to:carol", True),  # Cc counts
        ("to:@example.net", True),
        ("to:eam@lists.example.org", False),
        ("to:alice", False),  # the sender, not a recipient
        ("to:Liddell", False),  # addresses only: recipients have no names here
        # lists and negation
        ("from:nobody,alice", True),
        ("to:nobody,carol@example.net", True),
        ("-from:alice", False),
        ("-to:dave", True),
        ("from:alice -to:team", False),
        ("from:alice OR to:dave", True),
        # LIKE's wildcards are only characters
        ("from:a_ice", False),
        ("to:%", False),
    ],
)
def test_from_and_to_matching(query: str, expected: bool) -> None:
    assert EventFilter.parse(query, now=NOW).matches(mail()) is expected


def test_from_reads_every_kind_and_to_only_lists_of_addresses() -> None:
    # A feed author has a name and perhaps an address: from: finds either.
    feed = event(actor=Actor("Jane Doe", "jane@blog.example"))
    assert EventFilter.parse("from:jane@blog.example").matches(feed)
    assert EventFilter.parse("from:doe").matches(feed)
    assert not EventFilter.parse("to:jane").matches(feed)
    # Nobody at all: no from: term matches, every -from: term does.
    anonymous = event(actor=Actor())
    assert not EventFilter.parse("from:a").matches(anonymous)
    assert EventFilter.parse("-from:a").matches(anonymous)
    # Only strings in lists are addresses (SQL checks json_type = 'array' too).
    odd = event(extra={"to": "bob@example.org", "cc": [1, None, ["bob@example.org"]]})
    assert not EventFilter.parse("to:bob").matches(odd)
    assert EventFilter.parse("-to:bob").matches(odd)


def test_from_and_to_fold_ascii_only() -> None:
    # What SQLite's lower() does, as for the other field values.
    zoe = event(actor=Actor("Zoë", "ZOË@x.org"), extra={"to": ["Zoë@x.org"]})
    assert EventFilter.parse("from:zoë@x.org").matches(event(actor=Actor(None, "zoë@x.org")))
    assert not EventFilter.parse("from:zoë@x.org").matches(zoe)
    assert EventFilter.parse("from:zoË").matches(zoe)
    assert EventFilter.parse("to:zoë").matches(zoe)
    assert not EventFilter.parse("to:ZOË").matches(event(extra={"to": ["zoë@x.org"]}))


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("From:Alice@Example.org,Bob", "from:alice@example.org,bob"),
        ('from:"Doe, Jane" -TO:"a b"', 'from:"doe, jane" -to:"a b"'),
    ],
)
def test_from_and_to_render(query: str, canonical: str) -> None:
    flt = EventFilter.parse(query, now=NOW)
    assert str(flt) == canonical
    assert EventFilter.parse(canonical, now=NOW) == flt


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("from:", 5, "from: needs a value"),
        ("to:a,", 5, "to: needs a value"),
        ('-to:""', 4, "to: needs a value"),
    ],
)
def test_from_and_to_errors(query: str, position: int, message: str) -> None:
    with pytest.raises(QueryError) as err:
        EventFilter.parse(query)
    assert err.value.position == position
    assert message in str(err.value)


def test_from_and_to_in_sql(tmp_path: Path) -> None:
    # The documented examples on a real store (the property test covers the rest).
    store = Store(store_url(tmp_path))
    try:
        config = parse_config(
            {"sources": [{"id": "mail", "kind": "feed", "url": "https://e.org/f"}]}
        )
        store.sync_sources(config.sources, NOW)
        items = [
            EventData("1", "Plans", actor=Actor("Alice Liddell", "alice@example.org"),
                      published=NOW, extra={"to": ["team@lists.example.org"], "cc": ["bob@x.org"]}),
            EventData("2", "Re: plans", actor=Actor("Bob", "bob@x.org"), published=NOW,
                      extra={"to": ["alice@example.org"], "cc": []}),
            EventData("3", "A post", actor=Actor("Malice", "malice@example.org"), published=NOW),
            EventData("4", "Anonymous", published=NOW, extra={"to": "bob@x.org"}),
            EventData("5", "Grüße", actor=Actor("Zoë"), published=NOW,
                      extra={"to": ["zoë@exämple.org", "Carol@Example.org"]}),
        ]  # fmt: skip
        store.record_poll(config.sources[0], prepare(items), state=None, now=NOW, next_poll_at=NOW)

        def titles(query: str) -> list[str]:
            found = store.latest_events(EventFilter.parse(query, now=NOW), viewer=None)
            return sorted(e.title for e in found)

        assert titles("from:alice") == ["A post", "Plans"]  # Malice, too: a part
        assert titles("from:alice@example.org") == ["Plans"]  # a whole address
        assert titles("-from:alice@example.org") == ["A post", "Anonymous", "Grüße", "Re: plans"]
        assert titles("to:bob") == ["Plans"]  # Cc; not a lone string
        assert titles("to:alice@example.org,team") == ["Plans", "Re: plans"]
        assert titles("-to:@example.org,zoë") == ["A post", "Anonymous", "Plans"]  # not @lists.
        assert titles("to:example.org") == ["Grüße", "Plans", "Re: plans"]
        assert titles("from:%") == titles("to:_") == []
        # JSON escapes non-ASCII ("\u00eb"): the text is a shortcut for ASCII values only.
        assert titles("to:zoë") == titles("to:exämple.org") == titles("to:carol@example.org")
        assert titles("to:zoë") == ["Grüße"]
        assert titles("from:zoë") == ["Grüße"]
    finally:
        store.close()
