"""Smoke test of bench/history.py on 2,000 events: the generator writes what the
store would, and Tidings and the hand-written floor select the same events."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from aggregator.filters import EventFilter
from aggregator.store import Store
from aggregator.store.schema import events
from bench import history


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

    args = argparse.Namespace(
        runs=2,
        ranked_every=2,
        edge_every=2,
        no_ranked=False,
        explain=True,
        json=None,
        progress=False,
    )
    result = history.measure(db, meta, args)
    assert result["mismatches"] == []
    result["verdicts"] = history.verdicts(result)
    history.print_report(meta, result, args)
    out = capsys.readouterr().out
    assert "selected the same events for every value and viewer" in out
    assert "Filtered history pages" in out and "target 25 ms" in out
    assert "USING INTEGER PRIMARY KEY" in out  # the plans were printed
