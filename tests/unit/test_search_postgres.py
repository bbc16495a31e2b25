"""Full-text search on PostgreSQL (aggregator/search_postgres.py): the
documents and queries it builds, and, on a real PostgreSQL
(TIDINGS_TEST_STORE=postgresql), that the index follows the events, that
the migration indexes what was stored before it, that no token is ever
tsquery syntax, and that a search reads the GIN index. test_search.py and
test_query_property.py run on both stores for what both must do alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aggregator.decide import prepare
from aggregator.search_postgres import MAX_POSITION, document, query
from aggregator.store import Store
from tests.stores import store_url
from tests.unit.test_search import (
    NOW,
    add,
    found,
    index_is_sound,
    item,
    postgres_index,
    sources,
    stored_before,
)


def test_a_document_weighs_each_column_and_keeps_them_apart() -> None:
    doc = document("Merger talks", "talks, again", "Jane O'Neil")
    assert doc == "'jane':1C 'o':2C 'neil':3C 'merger':5A 'talks':6A,8B 'again':9B"
    assert document("", "", "") == ""
    assert document("a\\b", "", "") == "'a':2A 'b':3A"  # the tokenizer splits at "\\"


def test_a_query_quotes_every_token_and_scopes_phrases_to_one_column() -> None:
    assert query([("merger",)]) == "'merger':ACB"
    assert query([("jane",)], field="author") == "'jane':C"
    assert query([("big", "deal"), ("x",)], any_of=True) == (
        "(('big':A <-> 'deal':A) | ('big':C <-> 'deal':C) | ('big':B <-> 'deal':B)) | 'x':ACB"
    )
    assert query([("it's",), ("a\\b",)]) == "'it''s':ACB & 'a\\\\b':ACB"
    with pytest.raises(ValueError):
        query([()])


def test_positions_stop_where_postgresql_stops_them() -> None:
    doc = document("", " ".join(f"w{i}" for i in range(MAX_POSITION + 10)), "")
    assert f"'w{MAX_POSITION + 5}':{MAX_POSITION}B" in doc  # still found as a word


# --- on PostgreSQL ---------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url(tmp_path))
    yield s
    s.close()


@pytest.mark.postgresql_only
def test_the_index_follows_inserts_and_deletes(store: Store) -> None:
    [wiki] = sources("wiki")
    first, second = add(
        store, wiki, item("a", "Merger talks"), item("b", "Quarterly", author="Jane")
    )
    index_is_sound(store)
    assert set(postgres_index(store)) == {first, second}
    assert found(store, "merger") == [first] and found(store, "author:jane") == [second]
    store.create_source({"id": "tmp", "kind": "feed", "url": "https://e.org/t"}, actor="t", now=NOW)
    [tmp] = store.db_sources()
    [third] = store.record_poll(
        tmp, prepare([item("c", "Merger")]), state=None, now=NOW, next_poll_at=NOW
    )
    assert found(store, "merger") == [third, first]
    store.delete_source("tmp", actor="t", now=NOW)  # its events go, and their documents
    assert set(postgres_index(store)) == {first, second}
    index_is_sound(store)


@pytest.mark.postgresql_only
def test_a_new_audience_does_not_touch_the_index(store: Store) -> None:
    [wiki] = sources("wiki")
    add(store, wiki, item("a", "Merger talks"))
    before = postgres_index(store)
    store.sync_sources(sources("wiki", audience=["legal"]), NOW)
    assert postgres_index(store) == before


@pytest.mark.postgresql_only
def test_the_migration_indexes_the_events_already_stored(tmp_path: Path) -> None:
    url = stored_before(tmp_path, "0007", actor_name="Jane")  # before 0008: not indexed
    store = Store(url)  # migrates to the head again
    assert len(found(store, "merger")) == 1 and len(found(store, "author:jane")) == 1
    index_is_sound(store)
    store.close()


@pytest.mark.postgresql_only
@pytest.mark.parametrize("hostile", ["a'b", "x:*", "!a", "a & b", "a|b", "(a", "<->", "\\", "a:A"])
def test_no_token_is_ever_tsquery_syntax(store: Store, hostile: str) -> None:
    """Tokens the tokenizer would never make, written into a query as is:
    each stays one quoted lexeme, and finds only a document holding it."""
    with store._read.connect() as conn:
        parsed = conn.scalar(text("SELECT CAST(:q AS tsquery)::text"), {"q": query([(hostile,)])})
        assert parsed.count("'") - parsed.count("''") * 2 == 2, parsed  # one lexeme
        hit = conn.scalar(
            text("SELECT CAST(:d AS tsvector) @@ CAST(:q AS tsquery)"),
            {
                "d": "'" + hostile.replace("\\", "\\\\").replace("'", "''") + "':1A",
                "q": query([(hostile,)]),
            },
        )
        miss = conn.scalar(
            text("SELECT CAST(:d AS tsvector) @@ CAST(:q AS tsquery)"),
            {"d": document("a b x A", "", ""), "q": query([(hostile,)])},
        )
    assert hit is True and miss is False


@pytest.mark.postgresql_only
def test_free_text_reads_the_gin_index(store: Store) -> None:
    [wiki] = sources("wiki")
    add(store, wiki, *(item(str(i), f"title {i}") for i in range(50)))
    q = query([("title",), ("7",)]).replace("'", "''")
    with store._read.connect() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: seq scan otherwise
        found_plan = conn.exec_driver_sql(
            f"EXPLAIN SELECT event_id FROM event_search WHERE doc @@ '{q}'::tsquery"
        )
        plan = " ".join(r[0] for r in found_plan)
    assert "ix_event_search_doc" in plan, plan


@pytest.mark.postgresql_only
def test_the_planner_knows_how_common_a_kind_and_verb_are(store: Store) -> None:
    """Migration 0009's statistics are on exactly the expressions the query
    language writes: a kind and verb every event has are estimated as such,
    not as 0.5% x 0.5% of the events (which chose a scan and a sort)."""
    from sqlalchemy import select

    from aggregator.filters import EventFilter
    from aggregator.store.conditions import matching
    from aggregator.store.schema import events

    [wiki] = sources("wiki")
    add(store, wiki, *(item(str(i), f"title {i}") for i in range(400)))
    with store._write.begin() as conn:
        conn.execute(text("ANALYZE events"))
    with store._read.connect() as conn:
        flt = EventFilter.parse("kind:feed verb:create")
        query = select(events.c.id).where(matching(conn, flt, store.search))
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        assert 'COLLATE "C"' in sql  # what the statistics are on
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar()
    assert plan[0]["Plan"]["Plan Rows"] > 300, plan
