"""The two back-ends agree: for random events in a real SQLite store and random
queries, SQL selects exactly the events the in-memory predicate accepts.

Queries are random syntax trees rendered to strings, so the same run also
checks that parsing a rendered tree gives the tree back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from aggregator.config import SourceConfig, parse_config
from aggregator.decide import prepare
from aggregator.filters import (
    RECIPIENTS,
    And,
    EventFilter,
    Node,
    Not,
    Or,
    Term,
    Text,
    Time,
    fold,
    render,
)
from aggregator.search import event_columns, tokenize
from aggregator.store import Store
from aggregator.store.schema import entries, events
from aggregator.types import JSON, Actor, Event, EventData
from aggregator.visibility import Viewer
from tests.stores import store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SOURCES = ("wiki", "jira", "CRM")

# Words with case, diacritics, joiners and punctuation, so tokenizing matters.
WORDS = (
    "merger", "Merger", "MERGER", "news", "draft", "café", "Cafe", "CAFÉ", "naïve", "résumé",
    "resume", "Zoë", "zoe", "straße", "über", "e-mail", "email", "snake_case", "it's", "x2",
    "2026", "jane", "doe", "Łódź", "ǖ", "q&a", "R&D",
)  # fmt: skip
SEPARATORS = (" ", " ", ", ", "-", "_", "! ", "'", "/", " (", ") ")
AUTHORS = (None, "Jane Doe", "Doe, Jane", "jane", "Zoë Saldaña", "J.R. Doe-Smith")
# Addresses with ASCII and other case, and LIKE's `%`, `_` and escape `/`.
EMAILS = (
    None, "", "alice@example.org", "Alice@Example.ORG", "bob_smith@example.org", "bobxsmith@x.org",
    "bob@example.org.evil.net", "100%@x.org", "a/b@x.org", "zoë@exämple.org", "ZOË@x.org",
)  # fmt: skip
# extra["to"] and extra["cc"]: lists of addresses, and shapes that are not (only lists count).
RECIPIENT_LISTS: tuple[JSON, ...] = (
    [], ["alice@example.org"], ["team@lists.example.org"], ["devteam@lists.example.org", "b@x.org"],
    ["bob_smith@example.org", "zoë@exämple.org"], ["Carol@Example.org"], ["100%@x.org"],
    "alice@example.org", {"a": "alice@example.org"}, [1, None, True, ["alice@example.org"]],
)  # fmt: skip
TAGS = ("Urgent", "URGENT", "Legal", "Ärger", "ärger", "a,b", "x y", "")
VERBS = ("Create", "Update", "Announce", "delete")
TYPES = ("Article", "Note", "Issue")

# What queries ask for: existing values in other cases, and values nothing has.
PHRASES = tuple(
    {tuple(tokenize(w)) for w in WORDS}
    | {("jane", "doe"), ("merger", "news"), ("news", "merger"), ("e", "mail"), ("acquisition",)}
)
# Whole addresses (which must equal one) and parts (which occur in one), with
# LIKE's wildcards, which must stay literal.
FROM_VALUES = (
    "alice@example.org", "bob@example.org", "alice", "@example.org", "example.org", "alice@",
    "b_b", "bob_s", "100%", "%", "_", "/", "a/b", "zoë", "zoË", "jane", "doe, jane", "j.r.",
)  # fmt: skip
TO_VALUES = (
    "alice@example.org", "team@lists.example.org", "carol@example.org", "team", "@example",
    "%", "_", "100%", "bob_", "zoë", "nobody@x.org",
)  # fmt: skip
QUERY_VALUES = {
    "source": ("wiki", "jira", "crm", "nope"),
    "kind": ("feed", "imap"),
    "verb": ("create", "update", "announce", "delete", "like"),
    "type": ("article", "note", "issue", "page"),
    "tag": ("urgent", "legal", "Ärger", "ärger", "a,b", "x y", "urg"),
    "author": ("jane", "doe", "jane doe", "doe jane", "zoe", "saldana", "j", "smith", "nobody"),
    "from": FROM_VALUES,
    "to": TO_VALUES,
}


def text_of(parts: list[str], glue: list[str]) -> str:
    return "".join(p + g for p, g in zip(parts, glue, strict=True)).strip()


@st.composite
def an_event(draw: st.DrawFn) -> tuple[str, EventData]:
    n = draw(st.integers(0, 6))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    glue = draw(st.lists(st.sampled_from(SEPARATORS), min_size=n, max_size=n))
    cut = draw(st.integers(0, n))
    return (
        draw(st.sampled_from(SOURCES)),
        EventData(
            external_id=None,  # set per example, to be unique
            title=text_of(words[:cut], glue[:cut]),
            summary=text_of(words[cut:], glue[cut:]),
            verb=draw(st.sampled_from(VERBS)),
            object_type=draw(st.sampled_from(TYPES)),
            actor=Actor(draw(st.sampled_from(AUTHORS)), draw(st.sampled_from(EMAILS))),
            tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=3, unique=True))),
            extra={
                key: draw(st.sampled_from(RECIPIENT_LISTS))
                for key in draw(st.lists(st.sampled_from(RECIPIENTS), unique=True))
            },
            published=NOW
            - timedelta(
                minutes=draw(st.integers(0, 60 * 24 * 20)),
                microseconds=draw(st.sampled_from([0, 1, 500_000, 999_999])),
            ),
        ),
    )


def slices(tokens: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [tokens[i : i + n] for n in (1, 2) for i in range(len(tokens) - n + 1)]


def leaves(stored: list[Event]) -> st.SearchStrategy[Node]:
    """Terms about what the events hold (so queries hit), and about nothing."""
    phrases = set(PHRASES)
    values = {f: set(v) for f, v in QUERY_VALUES.items()}
    for e in stored:
        # Pairs across the end of one column and the start of the next, too.
        phrases.update(slices(tuple(itertools.chain(*event_columns(e)))))
        values["author"].update(" ".join(p) for p in slices(event_columns(e)[2]))
        values["tag"].update(fold(t) for t in e.tags if t)
        values["verb"].add(fold(e.verb))
        values["type"].add(fold(e.object_type))
        addresses = [e.actor.email or ""]
        for key in RECIPIENTS:
            listed = e.extra.get(key)
            if isinstance(listed, list):
                addresses.extend(a for a in listed if isinstance(a, str))
        for address in filter(None, map(fold, addresses)):
            local, at, domain = address.partition("@")
            # Whole addresses inside this one (lice@..., ...@example.or) must not match it.
            parts = {address, address[1:], address[:-1], local, at + domain, address[1:3]} - {""}
            values["from" if address == fold(e.actor.email or "") else "to"].update(parts)
        if e.actor.name:
            values["from"].update({fold(e.actor.name), fold(e.actor.name)[1:4]} - {""})
    fields = st.sampled_from(sorted(values))
    terms = fields.flatmap(
        lambda f: st.lists(st.sampled_from(sorted(values[f])), min_size=1, max_size=3).map(
            lambda vs: Term(f, tuple(vs))
        )
    )
    instants = st.one_of(
        st.sampled_from([e.published for e in stored]),  # the bounds' edges
        st.integers(-60 * 24 * 21, 60).map(lambda m: NOW + timedelta(minutes=m)),
    )
    bounds = st.builds(Time, st.sampled_from(["since", "until"]), instants)
    texts = st.sampled_from(sorted(phrases)).map(Text)
    return st.one_of(texts, terms, terms, bounds)


def queries(stored: list[Event]) -> st.SearchStrategy[Node]:
    def branches(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        several = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(children.map(Not), several.map(And), several.map(Or))

    return st.recursive(leaves(stored), branches, max_leaves=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, list[SourceConfig]]]:
    store = Store(store_url(tmp_path_factory.mktemp("property")))
    config = parse_config(
        {"sources": [{"id": s, "kind": "feed", "url": "https://e.org/f"} for s in SOURCES]}
    )
    store.sync_sources(config.sources, NOW)
    yield store, list(config.sources)
    store.close()


_serial = itertools.count()


def fill(store: Store, sources: list[SourceConfig], items: list[tuple[str, EventData]]) -> None:
    """Replace the store's events with `items` (one store for every example)."""
    with store._writing() as conn:
        conn.execute(delete(entries))
        conn.execute(delete(events))  # the FTS index follows through its trigger
    for source in sources:
        mine = [
            replace(data, external_id=f"e{next(_serial)}")
            for sid, data in items
            if sid == source.id
        ]
        if mine:
            store.record_poll(source, prepare(mine), state=None, now=NOW, next_poll_at=NOW)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_sql_and_memory_select_the_same_events(
    world: tuple[Store, list[SourceConfig]], data: st.DataObject
) -> None:
    store, sources = world
    items = data.draw(st.lists(an_event(), min_size=1, max_size=10), label="events")
    fill(store, sources, items)
    stored: list[Event] = store.latest_events(viewer=None, limit=100)
    assert len(stored) == len(items)

    root = data.draw(queries(stored), label="query")
    query = render(root)
    flt = EventFilter.parse(query, now=NOW)
    assert flt.root == root, query  # parse(render(tree)) == tree

    expected = [e.id for e in stored if flt.matches(e)]
    event(
        "selects " + ("none" if not expected else "all" if len(expected) == len(stored) else "some")
    )
    assert [e.id for e in store.latest_events(flt, viewer=None, limit=100)] == expected, query
    ranked = store.search_events(flt, viewer=None, limit=100)
    assert sorted(e.id for e in ranked) == sorted(expected), query
    member = Viewer("member", frozenset({"wiki", "CRM"}))
    visible = [e.id for e in stored if flt.matches(e) and member.can_see(e.source_id)]
    assert [e.id for e in store.latest_events(flt, viewer=member, limit=100)] == visible, query


def test_field_values_in_queries_are_normalised_like_the_parser_does() -> None:
    # The generator's values must be what the parser makes, or round trips fail.
    for field, values in QUERY_VALUES.items():
        for value in values:
            parsed = EventFilter.parse(render(Term(field, (value,)))).root
            assert parsed == Term(
                field, (" ".join(tokenize(value)) if field == "author" else fold(value),)
            )
