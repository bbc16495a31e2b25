"""Smoke test of bench/live.py's bookkeeping: with several servers each one's
share of the deliveries is counted apart (duplicates, missing, latency against
its own commit times), and every run gets its own copy of the template store,
on PostgreSQL a database that is dropped afterwards."""

from __future__ import annotations

import argparse
import os
from array import array
from pathlib import Path
from typing import Any

import pytest

from aggregator.store import Store
from bench import live
from tests import stores


def _received(rows: list[tuple[int, int, float]], failed: list[int]) -> live.Result:
    conn, ids, times = zip(*rows, strict=True)
    return {
        "conn": array("I", conn),
        "ids": array("I", ids),
        "times": array("d", times),
        "bytes": 1000 * len(rows),
        "closes": {},
        "failed": failed,
    }


def test_each_server_s_share_is_counted_against_its_own_commits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(
        warmup=1.0, rate=1.0, conns=4, workers=2, store="postgresql", pg_server=live.PG_SERVER,
        client_procs=1, seconds=3.0, runs=1,
    )  # fmt: skip
    # Two floor processes: each commits the same ids at its own times.
    commits = [[(i, 100.0 + i, 100.0 + i) for i in (1, 2, 3, 4)]]
    commits.append([(i, 200.0 + i, 200.0 + i) for i in (1, 2, 3, 4)])
    rows = [(0, i, 100.01 + i) for i in (1, 2, 3, 4)]  # server 0: 10 ms each
    rows += [(1, i, 200.02 + i) for i in (1, 2, 3, 3, 4)]  # server 1: 20 ms, 3 twice
    rows += [(2, i, 100.01 + i) for i in (1, 2, 4)]  # server 0: 3 missing
    cpu: dict[str, Any] = {"server": 2.0, "server0": 1.5, "server1": 0.5, "clients": 0.2}
    cpu |= {"machine": 3.0, "seconds": 10.0, "wall0": 0.0, "wall1": 1e12, "busiest_others": []}
    result = live._figures(
        args,
        commits=commits,
        clients=[_received(rows, failed=[3])],  # connection 3 (server 1's) failed
        cpu=cpu,
        rss={k: [100.0, 90.0] for k in ("idle", "connected", "end", "peak")},
    )
    first, second = result["workers"]
    assert (first["connected"], first["expected"], first["received"]) == (2, 6, 5)
    assert (first["missing"], first["duplicates"], first["incomplete_streams"]) == (1, 0, 1)
    assert (second["connected"], second["expected"], second["received"]) == (1, 3, 4)
    assert (second["missing"], second["duplicates"], second["out_of_order"]) == (0, 1, 1)
    assert first["max_ms"] == pytest.approx(10, abs=0.01)
    assert second["p50_ms"] == pytest.approx(20, abs=0.01)
    assert first["server_cpu_us_per_delivery"] == pytest.approx(1.5 / 7 * 1e6)
    assert (result["expected"], result["received"], result["missing"]) == (9, 9, 1)
    assert result["duplicates"] == 1 and result["rss_peak_mb"] == 190.0

    live.print_table(live.summarise({"floor": [result]}), args)
    out = capsys.readouterr().out
    assert "2 web workers" in out and "store: PostgreSQL at" in out
    assert "floor process 2" in out and "missing deliveries" in out


def test_each_run_gets_its_own_copy_of_the_template_store(tmp_path: Path) -> None:
    args = argparse.Namespace(
        store=stores.STORE, pg_server=stores.PG_SERVER, conns=3, users=2, auth="tokens"
    )
    (tmp_path / "template").mkdir()
    (tmp_path / "run").mkdir()
    template = live.make_template(args, tmp_path / "template")
    try:
        tokens = live._tidings_template(args, template)
        url = live.fresh_store(template, tmp_path / "run", 1)
        assert url != template.store_url
        store = Store(url)
        try:
            assert len(set(tokens)) == 3 and len(store.people.tokens()) == 3
            assert store.people.groups() == {"staff": ["bench0000", "bench0001"]}
            assert store.max_event_id() == 0
        finally:
            store.close()
        live.drop_store(template, url)
    finally:
        live.drop_store(template, template.store_url)


@pytest.mark.postgresql_only
def test_a_run_s_database_and_its_server_processes(tmp_path: Path) -> None:
    args = argparse.Namespace(store="postgresql", pg_server=stores.PG_SERVER)
    template = live.make_template(args, tmp_path)
    url = live.fresh_store(template, tmp_path, 1)
    names = [template.store_url.rsplit("/", 1)[1], url.rsplit("/", 1)[1]]
    try:
        store = Store(url)
        try:
            pids = live._backends(template, url)
            assert pids and all(os.path.exists(f"/proc/{pid}") for pid in pids)
        finally:
            store.close()
    finally:
        live.drop_store(template, url)
        live.drop_store(template, template.store_url)
    query = "SELECT datname FROM pg_database WHERE datname IN (:a, :b)"
    assert live._pg_admin(stores.PG_SERVER, query, a=names[0], b=names[1]) == []
