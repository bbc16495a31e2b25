"""bench/soak.py: a very short soak on the session's store (a SQLite file, or
with TIDINGS_TEST_STORE=postgresql a database the bench makes and drops), and
the pieces its figures rest on: the item schedule, commit times from the
watcher's notes, and the memory trend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak
from tests import stores

# It starts real processes on loopback: a feed server, `tidings poller`,
# `tidings serve --no-poller`, clients.
pytestmark = pytest.mark.integration


def test_the_schedule_is_the_same_on_every_run_and_spread_evenly() -> None:
    plan = soak.schedule(feeds=20, per_minute=120, seconds=30)
    assert plan == soak.schedule(feeds=20, per_minute=120, seconds=30)
    assert [i.offset for i in plan] == [k * 0.5 for k in range(60)]
    assert all(0 <= i.feed < 20 for i in plan) and len({i.feed for i in plan}) > 10
    assert len({i.guid for i in plan}) == 60
    assert plan != soak.schedule(feeds=20, per_minute=120, seconds=30, seed="another")


def test_an_event_is_committed_when_an_id_at_least_as_high_is_announced() -> None:
    # Writers take turns, so ids become visible in id order: 3 came with 4.
    notes = [(2, 10.0), (4, 11.0), (5, 12.5)]
    assert soak.commit_times(notes, [5, 1, 3, 4, 2, 6]) == {
        1: 10.0, 2: 10.0, 3: 11.0, 4: 11.0, 5: 12.5
    }  # fmt: skip


def test_memory_trend_is_a_least_squares_slope_after_the_warm_up() -> None:
    # 1 MB a minute after a jump during the warm-up: 60 MB/h, over 20 minutes.
    points = [(0.0, 50.0)] + [(60.0 * m, 100.0 + m) for m in range(1, 22)]
    t = soak.trend(points, warmup=90.0)
    assert (t["first_mb"], t["last_mb"], t["max_mb"]) == (102.0, 121.0, 121.0)
    assert t["slope_mb_per_h"] == pytest.approx(60.0) and t["verdict"] == "GROWING"
    flat = soak.trend([(60.0 * m, 100.0 + m % 2) for m in range(30)], warmup=0)
    assert abs(flat["slope_mb_per_h"]) < 2 and flat["verdict"] == "flat"
    assert soak.trend(points[:5], warmup=0)["verdict"] == "short"


def test_a_short_soak_delivers_every_event_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.json"
    argv = [
        "--store", stores.STORE, "--pg-server", stores.PG_SERVER,
        "--workers", "1", "--pollers", "1", "--sources", "20", "--conns", "20",
        "--client-procs", "1", "--users", "5", "--interval", "5s", "--new-per-minute", "120",
        "--minutes", "0.25", "--sample", "2", "--wait-quiet", "0", "--json", str(out),
    ]  # fmt: skip
    assert soak.main(argv) == 0
    r = json.loads(out.read_text())
    assert r["items_appeared"] == r["items_scheduled"] == 30
    assert r["items_stored"] == 30 and r["events"] >= 30
    assert r["connected"] == 20 and r["streams_at_end"] == [20]
    assert r["expected"] == r["events"] * 20 == r["received"]
    assert r["missing"] == r["duplicates"] == r["out_of_order"] == 0
    assert r["commit_to_screen"]["n"] == r["received"] and r["commit_to_screen"]["p99_ms"] > 0
    assert r["appear_to_screen"]["n"] == 30 * 20
    assert r["events_without_commit_time"] == 0
    assert r["poll_failures_logged"] == 0 and r["store_health"]["sources_failing_at_end"] == 0
    names = [m.split(" (pid")[0] for m in r["memory"]]
    assert {"worker1", "poller1", "feeds", "watcher", "clients0"} <= set(names)
    assert any(n.startswith("poller1 parser") for n in names)
    assert r["memory_tidings_total"]["samples"] >= 3
    report = capsys.readouterr().out
    assert (
        " 0 missing; 0 duplicates; 0 out of id order -> OK" in report
        and "commit -> screen, ms" in report
    )
    if stores.on_postgresql():  # the run's database is gone
        from bench import live

        query = "SELECT datname FROM pg_database WHERE datname = :name"
        assert live._pg_admin(stores.PG_SERVER, query, name=r["database"]) == []


def test_interval_below_the_minimum_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        soak.main(["--interval", "2s"])
    assert "at least 5s" in capsys.readouterr().err
