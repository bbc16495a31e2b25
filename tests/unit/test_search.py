"""Full-text search: the FTS5 index follows the events, the Python tokenizer
agrees with SQLite's, user input is never FTS5 syntax, and results are ranked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text, update
from starlette.testclient import TestClient

import aggregator.store
import aggregator.store.conditions
from aggregator.config import SourceConfig, parse_config
from aggregator.decide import prepare
from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.search import (
    _SEPARATOR_RANGES,
    Fts5Search,
    event_columns,
    has_phrase,
    match_query,
    tokenize,
)
from aggregator.search_postgres import document
from aggregator.store import Store
from aggregator.store.conditions import matching
from aggregator.store.schema import event_tags, events
from aggregator.types import Actor, EventData
from aggregator.visibility import Viewer
from tests.stores import store_url
from web.app import create_app

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url(tmp_path))
    yield s
    s.close()


def sources(*ids: str, **extra: object) -> list[SourceConfig]:
    config = parse_config(
        {"sources": [{"id": i, "kind": "feed", "url": "https://e.org/f", **extra} for i in ids]}
    )
    return list(config.sources)


def add(store: Store, source: SourceConfig, *items: EventData) -> list[int]:
    store.sync_sources([source], NOW)
    return store.record_poll(source, prepare(items), state=None, now=NOW, next_poll_at=NOW)


def item(key: str, title: str = "", summary: str = "", author: str | None = None, **kw: object):
    return EventData(
        external_id=key,
        title=title,
        summary=summary,
        actor=Actor(author),
        **kw,  # type: ignore[arg-type]
    )


def found(store: Store, query: str, **kw: object) -> list[int]:
    return [e.id for e in store.latest_events(EventFilter.parse(query), viewer=None, **kw)]  # type: ignore[arg-type]


def postgres_index(store: Store) -> dict[int, str]:
    """PostgreSQL: each event's indexed document, as text."""
    with store._read.connect() as conn:
        found = conn.execute(text("SELECT event_id, doc::text FROM event_search"))
        return {int(i): str(doc) for i, doc in found}


def postgres_expected(store: Store) -> dict[int, str]:
    """PostgreSQL: the documents the events' own text makes."""
    with store._read.connect() as conn:
        rows = conn.execute(
            select(events.c.id, events.c.title, events.c.summary, events.c.actor_name)
        )
        return {
            int(r.id): str(
                conn.scalar(
                    text("SELECT CAST(:d AS tsvector)::text"),
                    {"d": document(r.title, r.summary, r.actor_name or "")},
                )
            )
            for r in rows.all()
        }


def index_is_sound(store: Store) -> None:
    """FTS5 compares the index with the `events` rows themselves; on
    PostgreSQL every event has the document its text makes, and nothing else
    is indexed."""
    if not store.is_sqlite:
        assert postgres_index(store) == postgres_expected(store)
        return
    with store._writing() as conn:
        conn.execute(text("INSERT INTO events_fts(events_fts, rank) VALUES ('integrity-check', 1)"))


# --- the index follows the events ----------------------------------------------------


@pytest.mark.sqlite_only
def test_the_index_follows_inserts_updates_and_deletes(store: Store) -> None:
    [wiki] = sources("wiki")
    first, second = add(store, wiki, item("a", "Merger talks"), item("b", "Quarterly report"))
    index_is_sound(store)
    assert found(store, "merger") == [first]
    with store._writing() as conn:
        conn.execute(update(events).where(events.c.id == first).values(title="Acquisition"))
    index_is_sound(store)
    assert found(store, "merger") == []
    assert found(store, "acquisition") == [first]
    with store._writing() as conn:
        conn.execute(update(events).where(events.c.id == second).values(actor_name="Jane Doe"))
    assert found(store, "author:jane") == [second]
    with store._writing() as conn:
        conn.execute(delete(events).where(events.c.id == first))
    index_is_sound(store)
    assert found(store, "acquisition") == []


@pytest.mark.sqlite_only
def test_a_new_audience_does_not_touch_the_index(store: Store) -> None:
    [wiki] = sources("wiki")
    add(store, wiki, item("a", "Merger talks"))
    with store._read.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM events_fts_data")).scalar()
    store.sync_sources(sources("wiki", audience=["legal"]), NOW)
    with store._read.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events_fts_data")).scalar() == before
    index_is_sound(store)


def test_deleting_a_source_takes_its_events_out_of_the_index(store: Store) -> None:
    store.create_source({"id": "tmp", "kind": "feed", "url": "https://e.org/t"}, actor="t", now=NOW)
    [tmp] = store.db_sources()
    store.record_poll(tmp, prepare([item("a", "Merger")]), state=None, now=NOW, next_poll_at=NOW)
    assert len(found(store, "merger")) == 1
    store.delete_source("tmp", actor="t", now=NOW)
    assert found(store, "merger") == []
    index_is_sound(store)


def stored_before(tmp_path: Path, revision: str, **row: object) -> str:
    """The URL of a store migrated down to `revision`, holding one event of
    source wiki ("Merger talks", and `row`) written there."""
    url = store_url(tmp_path, "old")
    store = Store(url)
    cfg = AlembicConfig(str(Path(aggregator.store.__file__).with_name("alembic.ini")))
    with store._write.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    store.sync_sources(sources("wiki"), NOW)
    with store._writing() as conn:
        conn.execute(
            insert(events).values(
                source_id="wiki", kind="feed", external_id="x", content_hash="h",
                verb="Create", object_type="Note", title="Merger talks", summary="",
                content_html="", published=NOW, extra={}, audience=[],
                ingested_at=NOW, **{"tags": [], **row},
            )
        )  # fmt: skip
    store.close()
    return url


@pytest.mark.sqlite_only
def test_the_migration_indexes_the_events_already_stored(tmp_path: Path) -> None:
    url = stored_before(tmp_path, "0003")  # before 0004: no trigger indexes it
    store = Store(url)  # migrates to the head again
    assert len(found(store, "merger")) == 1
    index_is_sound(store)
    with store._read.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'events_fts'")).scalar()
    assert f"tokenize='{Fts5Search.TOKENIZER}'" in sql  # what tokenize() emulates
    store.close()


def tag_index(store: Store) -> set[tuple[str, int]]:
    with store._read.connect() as conn:
        return {(r.tag, r.event_id) for r in conn.execute(select(event_tags))}


def test_the_tag_index_follows_the_events(store: Store) -> None:
    store.create_source({"id": "tmp", "kind": "feed", "url": "https://e.org/t"}, actor="t", now=NOW)
    [tmp] = store.db_sources()
    [wiki] = sources("wiki")
    one, two = add(store, wiki, item("a", tags=("Release", "RELEASE", "Ärger", "")), item("b"))
    [three] = store.record_poll(
        tmp, prepare([item("c", tags=("release",))]), state=None, now=NOW, next_poll_at=NOW
    )
    # Folded as fold() does (ASCII only), each once, the empty tag included.
    assert tag_index(store) == {("release", one), ("Ärger", one), ("", one), ("release", three)}
    assert found(store, "tag:RELEASE") == [three, one]
    assert found(store, "-tag:release") == [two]
    store.delete_source("tmp", actor="t", now=NOW)
    with store._writing() as conn:  # as retention deletes
        conn.execute(delete(events).where(events.c.id == two))
    assert tag_index(store) == {("release", one), ("Ärger", one), ("", one)}
    assert found(store, "tag:release") == [one]


def test_the_migration_indexes_the_tags_already_stored(tmp_path: Path) -> None:
    url = stored_before(tmp_path, "0009", tags=["Legal", "hr", "legal"])  # before 0010
    store = Store(url)  # migrates to the head again
    assert len(found(store, "tag:LEGAL")) == 1 and len(found(store, "tag:hr")) == 1
    assert {tag for tag, _ in tag_index(store)} == {"legal", "hr"}
    store.close()


@pytest.mark.sqlite_only
def test_a_tag_reads_its_index(store: Store) -> None:
    found_plan = plan(store, "tag:release")
    assert "event_tags USING PRIMARY KEY (tag=?)" in found_plan, found_plan
    assert "json_each" not in sql(store, "tag:release")


@pytest.mark.parametrize(
    "query", ["tag:a", "tag:b", "tag:a,b", "-tag:a", "tag:a -tag:b", "x OR tag:b"]
)
def test_a_common_tag_walked_selects_what_it_does_listed(
    store: Store, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [wiki] = sources("wiki")
    tags = [("a",), ("b",), ("a", "b"), (), ("A",)] * 3
    add(store, wiki, *(item(str(i), "x" if i % 4 else "", tags=t) for i, t in enumerate(tags)))
    listed = found(store, query)

    def after(cursor: int) -> list[int]:  # the index lookups start at the cursor
        return [e.id for e in store.events_after(cursor, EventFilter.parse(query), viewer=None)]

    listed_after = after(5)
    monkeypatch.setattr(aggregator.store.conditions, "COMMON_TAG", 2)  # every tag is common
    assert found(store, query) == listed and listed
    assert after(5) == listed_after and listed_after != listed
    if store.is_sqlite and query == "tag:a":
        assert "CORRELATED" in plan(store, query)  # walked: each event looked up


# --- the tokenizer agrees with SQLite's ---------------------------------------------


def sqlite_tokens(texts: list[str]) -> list[list[str]]:
    """How FTS5 itself tokenizes each of `texts`."""
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{Fts5Search.TOKENIZER}')")
    con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    con.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", enumerate(texts))
    tokens: list[list[str]] = [[] for _ in texts]
    for doc, term in con.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
        tokens[doc].append(term)
    con.close()
    return tokens


def test_every_character_of_the_bmp_tokenizes_as_in_sqlite() -> None:
    # Each character inside a word and at its start: separator, token
    # character, or a mark that only continues a token, and how it folds.
    texts = [f"a{chr(c)}a {chr(c)}b" for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    assert [tokenize(t) for t in texts] == sqlite_tokens(texts)


def test_characters_beyond_the_bmp_tokenize_as_in_sqlite() -> None:
    edges = {c + d for first, last in _SEPARATOR_RANGES for c in (first, last) for d in (-1, 0, 1)}
    codes = sorted(
        c
        for c in edges | set(range(0x10000, 0x110000, 97)) | set(range(0x10400, 0x10450))
        if 0x10000 <= c <= 0x10FFFF
    )
    texts = [f"a{chr(c)}a {chr(c)}b" for c in codes]
    assert [tokenize(t) for t in texts] == sqlite_tokens(texts)


TRICKY = [
    "Hello, World!",
    "snake_case e-mail O'Neil don\u2019t C++ #hashtag @user",
    "Straße STRASSE ﬁne Ⅻ ½ ٣ 中文字 日本語",
    "İstanbul ǅemal ς Σ µ \u017f Ǡ ǖ Ǖ ệ Ệ ǡ",
    "cafe\u0301 x\u0301y \u0301x e\u0301\u0302 a\u0308\u0308b",
    "😀 🤔x x🤔 ₽100 ₿ 👍🏽 a\u200bb a\u00adb",
    "𐐀𐐨 Deseret \U0001d400\U0001d401 \U0001d7d9",
    "\u13a0\uab70 Ა ა",
    "tab\tnew\nline\rcr",
    "",
    "   ",
]


@pytest.mark.parametrize("sample", TRICKY)
def test_tricky_text_tokenizes_as_in_sqlite(sample: str) -> None:
    assert tokenize(sample) == sqlite_tokens([sample])[0]


def test_overlong_tokens_are_cut_as_sqlite_cuts_them() -> None:
    samples = ["a" * 40000, "é" * 20000, "x" + "€" * 12000, "ab " * 10 + "c" * 33000]
    assert [tokenize(s) for s in samples] == sqlite_tokens(samples)


ALPHABET = st.sampled_from(
    [
        *"aZ09 _-,.'\"()*:^",
        *("é", "É", "e\u0301", "\u0301", "ß", "İ", "ς", "Ǡ", "ǖ", "ﬁ"),
        *("中", "😀", "🤔", "₽", "𐐀", "\u13a0", "\uab70", "\u200b", "\u3000", "Ⅻ"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(ALPHABET, max_size=30).map("".join), min_size=1, max_size=20))
def test_random_text_tokenizes_as_in_sqlite(samples: list[str]) -> None:
    assert [tokenize(s) for s in samples] == sqlite_tokens(samples)


# --- what free text matches ----------------------------------------------------------


def test_a_phrase_matches_within_one_field_only(store: Store) -> None:
    [wiki] = sources("wiki")
    [split] = add(store, wiki, item("a", "Big merger", "News today", "Jane"))
    assert found(store, '"big merger"') == [split]
    assert found(store, '"merger news"') == []  # title then summary: not a phrase
    assert found(store, '"news jane"') == []
    assert found(store, "merger jane") == [split]  # words: anywhere
    [event] = store.latest_events(viewer=None)
    columns = event_columns(event)
    assert not has_phrase(columns, ("merger", "news"))
    assert has_phrase(columns, ("jane",), "author") and not has_phrase(columns, ("big",), "author")


@pytest.mark.parametrize(
    "query",
    [
        '"\\""',  # a lone quote
        '"*"',
        '"^"',
        '"-"',
        '"NEAR(merger talks, 2)"',
        '"merger OR talks"',
        '"merger AND NOT talks"',
        '"title: merger"',
        '"{title summary}: merger"',
        '"merger*"',
        '"actor_name : x"',
        "merger*",
        "^merger",
        "NEAR(merger",
        'a"b',
        "(merger) OR(talks)",
    ],
)
def test_fts5_syntax_in_a_query_is_only_text(store: Store, query: str) -> None:
    [wiki] = sources("wiki")
    add(
        store, wiki,
        item("a", "Merger talks near the title"), item("b", "Talks, merger or not"),
        item("c", "NEAR(merger talks, 2) and title: merger"), item("d", "merger* ^x - y"),
    )  # fmt: skip
    try:
        flt = EventFilter.parse(query)
    except QueryError:
        return  # refused by our parser, with a position: never reaches FTS5
    expected = [e.id for e in store.latest_events(viewer=None) if flt.matches(e)]
    assert [e.id for e in store.latest_events(flt, viewer=None)] == expected
    assert sorted(e.id for e in store.search_events(flt, viewer=None)) == sorted(expected)


@pytest.mark.sqlite_only
def test_match_strings_quote_every_phrase(store: Store) -> None:
    assert match_query([("merger",), ("big", "deal")]) == '"merger" AND "big deal"'
    assert match_query([("jane",)], field="author", any_of=True) == 'actor_name : "jane"'
    assert match_query([('a"b',), ("NEAR(x",)], any_of=True) == '"a""b" OR "NEAR(x"'
    # Even tokens that are not tokenize()'s own stay inside their quotes.
    [wiki] = sources("wiki")
    add(store, wiki, item("a", "a b"))
    with store._read.connect() as conn:
        for hostile in ['a"b', 'a" OR "b', "x*", '"', 'a" NOT "b']:
            q = match_query([(hostile,)])
            conn.execute(text("SELECT rowid FROM events_fts WHERE events_fts MATCH :q"), {"q": q})
    with pytest.raises(ValueError):
        match_query([()])


def test_a_colon_in_text_needs_quotes(store: Store) -> None:
    with pytest.raises(QueryError) as err:
        EventFilter.parse("merger title:talks")
    assert err.value.position == 7 and "title" in str(err.value)
    [wiki] = sources("wiki")
    [hit] = add(store, wiki, item("a", "Re: merger"))
    assert found(store, '"re: merger"') == [hit]


# --- query plans ---------------------------------------------------------------------


def sql(store: Store, query: str, viewer: Viewer | None = None) -> str:
    """The SQL of a history page, as the store would run it."""
    flt = EventFilter.parse(query)
    with store._read.connect() as conn:
        q = select(events.c.id).where(matching(conn, flt, store.search))
        q = q.order_by(events.c.id.desc())
        if viewer is not None:
            q = q.where(viewer.where(events.c.source_id))
        return str(q.limit(51).compile(conn, compile_kwargs={"literal_binds": True}))


def plan(store: Store, query: str, viewer: Viewer | None = None) -> str:
    with store._read.connect() as conn:
        found = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql(store, query, viewer))
        return " | ".join(r[3] for r in found)


@pytest.mark.sqlite_only
def test_free_text_reads_the_index_and_walks_its_ids(store: Store) -> None:
    found_plan = plan(store, "merger kind:feed")
    assert "SCAN events_fts VIRTUAL TABLE" in found_plan
    assert "SEARCH events USING INTEGER PRIMARY KEY" in found_plan
    assert "TEMP B-TREE" not in found_plan


@pytest.mark.sqlite_only
def test_a_source_walks_its_own_index_whatever_case_the_query_uses(store: Store) -> None:
    store.sync_sources(sources("Wiki", "jira"), NOW)
    found_plan = plan(store, "source:WIKI")
    assert "INDEX ix_events_source_id_id (source_id=?)" in found_plan, found_plan
    assert "TEMP B-TREE" not in found_plan
    assert "SCAN events" not in found_plan
    # A name no source has matches nothing: a constant false condition.
    assert "WHERE 0 = 1" in sql(store, "source:nope")


@pytest.mark.sqlite_only
def test_the_planner_gets_statistics_once_the_store_has_events(tmp_path: Path) -> None:
    url = store_url(tmp_path, "big")
    store = Store(url)
    store.sync_sources(sources(*(f"s{i}" for i in range(5))), NOW)
    row = {
        "kind": "feed", "content_hash": "h", "verb": "Create", "object_type": "Note",
        "summary": "", "content_html": "", "published": NOW, "tags": [], "extra": {},
        "audience": [], "ingested_at": NOW,
    }  # fmt: skip
    rows = [{**row, "source_id": f"s{i % 5}", "external_id": str(i), "title": f"t{i}"}
            for i in range(1500)]  # fmt: skip
    with store._writing() as conn:
        conn.execute(insert(events), rows)
    member = Viewer("max", frozenset({"s0", "s1", "s2", "s3"}))
    # Without statistics SQLite sorts the member's sources' index for a page.
    assert "TEMP B-TREE" in plan(store, "kind:feed", member)
    store.close()
    store = Store(url)  # start-up refreshes them
    assert "TEMP B-TREE" not in plan(store, "kind:feed", member)
    with store._read.connect() as conn:
        assert conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'events'")).scalar()
    store.close()


# --- ranking -------------------------------------------------------------------------


def titles(store: Store, query: str, **kw: object) -> list[str]:
    flt = EventFilter.parse(query)
    return [e.title for e in store.search_events(flt, **{"viewer": None, **kw})]  # type: ignore[arg-type]


def test_search_ranks_by_relevance_then_newest(store: Store) -> None:
    [wiki] = sources("wiki")
    add(
        store, wiki,
        item("1", "Weekly digest", "merger merger merger and more"),
        item("2", "Merger", "Quiet week"),  # in the title: weighs more
        item("3", "Unrelated", "the merger is mentioned once among many other words here"),
        item("4", "Merger", "Quiet week"),  # same score as 2, newer
        item("5", "Nothing to see"),
    )  # fmt: skip
    assert titles(store, "merger") == ["Merger", "Merger", "Weekly digest", "Unrelated"]
    ranked = store.search_events(EventFilter.parse("merger"), viewer=None)
    assert ranked[0].external_id == "4" and ranked[1].external_id == "2"  # ties: newest first
    assert titles(store, "merger", limit=2, offset=2) == ["Weekly digest", "Unrelated"]
    assert titles(store, "") == ["Nothing to see", "Merger", "Unrelated", "Merger", "Weekly digest"]


def test_a_relevance_order_ranks_the_newest_matches_the_viewer_may_see(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the newest RANK_WITHIN matches are ranked (a word in most events
    would cost a score each); they are the newest of those that also meet
    the rest of the query and that the viewer may see, so neither a filter
    nor visibility thins them out."""
    monkeypatch.setattr("aggregator.store.RANK_WITHIN", 3)
    wiki, hr = sources("wiki", "hr")
    add(store, wiki, item("1", "Merger", "merger merger merger"))  # the best match, oldest
    add(store, hr, item("2", "hr merger note", "x"), item("3", "hr merger memo", "x"))
    add(
        store,
        wiki,
        item("4", "a merger", "x"),
        item("5", "b merger", "x"),
        item("6", "c merger", "x"),
    )
    add(store, hr, item("7", "hr merger newest", "x"))
    assert set(titles(store, "merger")) == {"hr merger newest", "c merger", "b merger"}
    # Not the newest 3 matches then filtered: the newest 3 of wiki's.
    assert set(titles(store, "merger source:wiki")) == {"a merger", "b merger", "c merger"}
    member = Viewer("max", frozenset({"hr"}))
    assert set(titles(store, "merger", viewer=member)) == {
        "hr merger newest", "hr merger memo", "hr merger note"
    }  # fmt: skip
    monkeypatch.setattr("aggregator.store.RANK_WITHIN", 10)
    assert titles(store, "merger")[0] == "Merger"  # within reach again: ranked first


def test_excluded_words_do_not_rank_and_or_ranks_partial_matches_last(store: Store) -> None:
    [wiki] = sources("wiki")
    add(
        store, wiki,
        item("1", "Merger", "draft draft draft"),
        item("2", "Merger news"),
        item("3", "Acquisition"),
    )  # fmt: skip
    assert titles(store, "merger -draft") == ["Merger news"]
    assert titles(store, "merger OR source:wiki")[-1] == "Acquisition"  # none of the words
    assert set(titles(store, "(merger OR acquisition) -news")) == {"Merger", "Acquisition"}


def test_search_only_shows_what_the_viewer_may_see(store: Store) -> None:
    wiki, legal = sources("wiki", "legal")
    add(store, wiki, item("a", "Merger (public)"))
    add(store, legal, item("b", "Merger (legal)"))
    member = Viewer("max", frozenset({"wiki"}))
    flt = EventFilter.parse("merger")
    assert [e.source_id for e in store.search_events(flt, viewer=member)] == ["wiki"]
    assert store.search_events(EventFilter.parse("merger source:legal"), viewer=member) == []
    assert len(store.search_events(flt, viewer=None)) == 2


# --- over HTTP -----------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, str, str]]:
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path, "web")},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
            "sources": [
                {"id": "pub", "kind": "feed", "url": "https://e.org/p"},
                {"id": "sec", "kind": "feed", "url": "https://e.org/s", "audience": ["legal"]},
            ],
        }
    )
    store = Store(config.store_url)
    store.sync_sources(config.sources, NOW)
    for src in config.sources:
        items = [item(f"{src.id}-{i}", f"Merger {src.id} {i}") for i in range(3)]
        store.record_poll(src, prepare(items), state=None, now=NOW, next_poll_at=NOW)
    store.people.create_user("ada", password_hash=None, admin=True, actor="t", now=NOW)
    store.people.create_user("max", password_hash=None, actor="t", now=NOW)
    admin = store.people.create_token("ada", "t", actor="t", now=NOW)
    member = store.people.create_token("max", "t", actor="t", now=NOW)
    store.close()
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as c:
        yield c, admin, member


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_bad_query_is_a_400_with_the_position(client: tuple[TestClient, str, str]) -> None:
    c, admin, _ = client
    for path in ("/api/events", "/api/search"):
        res = c.get(path, params={"q": "merger bad("}, headers=bearer(admin))
        assert res.status_code == 400
        assert res.json() == {"error": "unclosed parenthesis", "position": 10}
        res = c.get(path, params={"q": "colour:red"}, headers=bearer(admin))
        assert res.json()["position"] == 0 and "colour" in res.json()["error"]
    res = c.get("/api/search", params={"offset": "-1"}, headers=bearer(admin))
    assert res.status_code == 400 and "offset" in res.json()["error"]


def test_search_endpoint_pages_ranked_results_for_the_viewer(
    client: tuple[TestClient, str, str],
) -> None:
    c, admin, member = client
    assert c.get("/api/search", params={"q": "merger"}).status_code == 401
    first = c.get("/api/search", params={"q": "merger", "limit": 4}, headers=bearer(admin))
    body = first.json()
    assert len(body["events"]) == 4 and body["next_offset"] == 4
    rest = c.get(
        "/api/search", params={"q": "merger", "limit": 4, "offset": 4}, headers=bearer(admin)
    ).json()
    assert len(rest["events"]) == 2 and rest["next_offset"] is None
    ids = [e["id"] for e in body["events"] + rest["events"]]
    assert sorted(ids) == list(range(1, 7))
    mine = c.get("/api/search", params={"q": "merger"}, headers=bearer(member)).json()
    assert {e["source_id"] for e in mine["events"]} == {"pub"}
    hidden = c.get("/api/search", params={"q": "source:sec"}, headers=bearer(member)).json()
    assert hidden == {"events": [], "next_offset": None}
