"""Smoke test of bench/history.py on 2,000 events: the generator writes what the
store would, and Tidings and the hand-written floor select the same events, on
SQLite and (TIDINGS_TEST_STORE=postgresql) on PostgreSQL."""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from aggregator.filters import EventFilter
from aggregator.store import Store
from aggregator.store.schema import events
from bench import history
from tests import stores

ARGS = argparse.Namespace(
    runs=2, ranked_every=2, edge_every=2, no_ranked=False, explain=True, json=None, progress=False
)


def test_rows_are_written_as_sqlalchemy_writes_them() -> None:
    dialect = sqlite.dialect()
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    as_stored = events.c.published.type.dialect_impl(dialect).bind_processor(dialect)
    assert as_stored is not None
    assert as_stored(moment) == history._fmt_time(moment.replace(tzinfo=None))
    assert as_stored(moment) == "2026-03-04 05:06:07.000000"  # no microseconds: still six digits
    tags = events.c.tags.type.dialect_impl(dialect).bind_processor(dialect)
    assert tags is not None
    assert tags(["a", "b"]) == json.dumps(["a", "b"])


def test_generate_cache_and_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, meta = history.build_database(2000, tmp_path)
    assert meta["events"] == 2000 and sum(c for _, _, c in meta["sources"]) == 2000
    again, _ = history.build_database(2000, tmp_path)  # cached: not generated again
    assert again == db and history.cached_paths(2000, tmp_path)[0] == db

    store = Store(f"sqlite:///{db}")
    try:
        source = meta["sources"][0][0]
        page = store.latest_events(EventFilter.parse(f"source:{source}"), viewer=None, limit=51)
        assert len(page) == 51 and {e.source_id for e in page} == {source}
        assert all(e.published.tzinfo is UTC and isinstance(e.tags, tuple) for e in page)
        # Datetimes compare as the store's own would: since:7d keeps the last week only.
        week = store.latest_events(
            EventFilter.parse("since:7d", now=history.ANCHOR), viewer=None, limit=500
        )
        assert week and all(e.published >= history.ANCHOR - timedelta(days=7) for e in week)
        word = meta["words"][0][0]
        found = store.latest_events(EventFilter.parse(word), viewer=None, limit=51)
        assert len(found) == 51
    finally:
        store.close()

    result = history.measure(f"sqlite:///{db}", meta, ARGS)
    assert result["mismatches"] == []
    result["verdicts"] = history.verdicts(result)
    history.print_report(meta, result, ARGS)
    out = capsys.readouterr().out
    assert "2,000 events in SQLite" in out
    assert "selected the same events for every value and viewer" in out
    assert "Filtered history pages" in out and "target 25 ms" in out
    assert "a common word (1 query x 2 viewers" in out and "target 300 ms" in out
    assert "USING INTEGER PRIMARY KEY" in out  # the plans were printed


@pytest.mark.postgresql_only
def test_postgresql_copy_cache_and_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.search_postgres import RANK_WEIGHTS, document
    from bench import history_pg

    name = f"tidings_bench_t_{secrets.token_hex(3)}"  # not the bench's own, kept database
    try:
        url, meta = history_pg.build_database(2000, stores.PG_SERVER, name=name)
        assert "10,000,000 events would take about" in capsys.readouterr().out
        again, cached = history_pg.build_database(2000, stores.PG_SERVER, name=name)
        assert again == url and cached == json.loads(json.dumps(meta))  # kept, not made again
        # The same rows as on SQLite: the same counts, words and phrases.
        _, on_sqlite = history.build_database(2000, tmp_path)
        for key in ("sources", "kind_verb", "tags", "authors", "phrases"):
            assert cached[key] == json.loads(json.dumps(on_sqlite[key])), key
        assert dict(map(tuple, cached["words"])) == dict(on_sqlite["words"])

        store = Store(url)
        try:
            with store._read.connect() as conn:
                # Each tsvector is the one Store._append would have written.
                for title, summary, author, doc in conn.execute(
                    text(
                        "SELECT title, summary, actor_name, doc::text FROM events "
                        "JOIN event_search ON event_id = id ORDER BY id LIMIT 50"
                    )
                ):
                    made = document(title, summary, author or "")
                    assert (
                        conn.scalar(text("SELECT CAST(:d AS tsvector)::text"), {"d": made}) == doc
                    )
                # The indexes and foreign keys dropped for the load are back.
                indexes = conn.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'event_search'")
                ).all()
                assert "ix_event_search_doc" in indexes
                foreign = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                        "AND conrelid IN ('events'::regclass, 'event_search'::regclass)"
                    )
                )
                assert foreign == 2
                # New events follow on: the sequence went past the copied ids.
                assert conn.scalar(text("SELECT nextval('events_id_seq')")) == 2001
            source = meta["sources"][0][0]
            page = store.latest_events(EventFilter.parse(f"source:{source}"), viewer=None, limit=51)
            assert len(page) == 51 and {e.source_id for e in page} == {source}
            assert all(e.published.tzinfo is UTC and isinstance(e.tags, tuple) for e in page)
        finally:
            store.close()

        assert str(RANK_WEIGHTS).split("::")[0] in history_pg.POSTGRES_FLOOR.ranked
        result = history.measure(url, meta, ARGS)
        assert result["mismatches"] == []
        result["verdicts"] = history.verdicts(result)
        history.print_report(meta, result, ARGS)
        out = capsys.readouterr().out
        assert "2,000 events in PostgreSQL" in out
        assert "selected the same events for every value and viewer" in out
        assert "Buffers: shared hit=" in out  # EXPLAIN (ANALYZE, BUFFERS) was printed
    finally:
        history_pg.drop_database(stores.PG_SERVER, name)
