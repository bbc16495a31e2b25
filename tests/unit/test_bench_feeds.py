"""The feed benches' own logic, without a server: the generator's feed sizes,
the hostile bodies, the readings of the CLI's log, and the report of a run
(a crash there would cost a ten-minute run its figures)."""

from __future__ import annotations

import argparse
import gzip
import os
import re
from pathlib import Path

import pytest

from bench import feedgen, feeds, hostile


def test_items_sets_the_size_of_small_feeds() -> None:
    assert feedgen.parse_items("3-5") == (3, 5)
    assert feedgen.parse_items("4") == (4, 4)
    with pytest.raises(ValueError):
        feedgen.parse_items("5-3")
    small = feedgen.render_feed(7, items=(3, 5))
    assert 3 <= small.count(b"<item>") <= 5
    assert small == feedgen.render_feed(7, items=(3, 5))  # seeded: the same bytes everywhere
    default = feedgen.render_feed(7)
    assert feedgen.MIN_ITEMS <= default.count(b"<item>") <= feedgen.MAX_ITEMS


def test_gzip_bomb_is_two_valid_gzip_layers_of_zeros() -> None:
    bomb = hostile.gzip_bomb(mib=4)
    assert gzip.decompress(gzip.decompress(bomb)) == b"\0" * (4 << 20)  # CRC and size checked
    assert len(hostile.gzip_bomb()) < 16 * 1024  # the real one: a few KB for 2 GiB


def test_entity_bombs_declare_what_they_claim() -> None:
    bomb = hostile.entity_bomb(100)
    assert bomb.count(b"&a;") == 100 and b'"' + b"a" * 100 + b'"' in bomb
    late = hostile.late_entity_bomb(100, comment=5000)
    assert late.index(b"<!DOCTYPE") > 4096  # beyond a look at the first 4 KB
    laughs = hostile.billion_laughs()
    assert laughs.count(b"<!ENTITY") == 10 and b"<description>&lol9;</description>" in laughs
    assert len(hostile.drip_body(600)) == 600 and hostile.drip_body(600).startswith(b"<?xml")
    assert len(hostile.drip_body(5)) == 5


def test_failures_are_read_from_the_cli_log() -> None:
    log = (
        "2026-11-27 08:00:01,250 WARNING aggregator.pipeline: source hostile-drip: timed out\n"
        "2026-11-27 08:00:02,000 ERROR aggregator.pipeline: source real-001: connector crashed\n"
        "Traceback (most recent call last):\n"
        "2026-11-27 08:00:09,000 WARNING aggregator.pipeline: source hostile-drip: again\n"
    )
    found = hostile.failures_logged(log)
    assert set(found) == {"hostile-drip", "real-001"}
    assert found["real-001"] - found["hostile-drip"] == pytest.approx(0.75)  # the first line wins


def test_real_feeds_come_from_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    head = "local_path\tsource\tkind\tnotes\n"
    rows = [
        "rowanmanning-sample-feeds/real-world/x/feed.xml\tr\treal\trss; enc=utf-8; wf\n",
        "rowanmanning-sample-feeds/spec/y.xml\tr\tspec-example\trss; wf\n",  # not real-world
        "atoma/opml/list.xml\tatoma\tmixed\topml; wf\n",  # not a feed
        "feed-rs/jsonfeed/a.json\tfeed-rs\tmixed\tjsonfeed\n",
    ]
    (tmp_path / "feeds" / "manifest.tsv").write_text(head + "".join(rows))
    assert hostile.real_feeds(tmp_path) == [
        hostile.RealFeed("rowanmanning-sample-feeds/real-world/x/feed.xml", "application/rss+xml"),
        hostile.RealFeed("feed-rs/jsonfeed/a.json", "application/feed+json"),
    ]


def test_config_is_valid_toml_for_tidings(tmp_path: Path) -> None:
    from aggregator.config import load_config

    path = tmp_path / "config.toml"
    ports = {"real": 8001, **{name: 9000 + i for i, name in enumerate(hostile.HOSTILE)}}
    real = [hostile.RealFeed('odd "name"/feed.xml', "application/rss+xml")]
    hostile.write_config(path, ports, real, hostile.HOSTILE, total_timeout=12.5)
    config = load_config(path)
    assert [s.id for s in config.sources] == [
        "real-000",
        *(f"hostile-{n}" for n in hostile.HOSTILE),
    ]
    assert config.http_settings.total_timeout == 12.5


def test_tree_watch_sees_this_process() -> None:
    watch = hostile.TreeWatch(os.getpid())
    watch.sample()
    report = watch.report()
    assert report["main_mb"] > 1 and report["sum_of_peaks_mb"] >= report["main_mb"]
    assert watch.cpu_seconds() > 0


def _side(entries: int, seconds: float, polls: int) -> dict[str, object]:
    first = {"entries": entries, "seconds": seconds, "cpu": 2 * seconds, "server_cpu": 0.1,
             "other_cpu": 0.0, "connections": 8, "requests": polls, "conditional": 0,
             "served_304": 0, "errors": 0, "first_error": None}  # fmt: skip
    second = {**first, "entries": 0, "seconds": seconds / 10, "cpu": seconds / 10,
              "polls": polls, "conditional": polls, "served_304": polls,
              "connections": 0}  # fmt: skip
    return {"first": first, "second": second, "all_second": [second, second],
            "rss_main_mb": 100.0, "rss_children_mb": [80.0, 80.0]}  # fmt: skip


def test_report_of_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(feeds=10, runs=1, repeats=2, items=(3, 5), profile=None)
    runs = {
        "tidings-1": [_side(40, 1.0, 10)],
        "tidings-2": [_side(40, 0.5, 10)],
        "reader": [_side(40, 4.0, 10)],
        "floor": [{"entries": 40, "bytes": 10**6, "bare_eps": 100.0, "bare_other_cpu": 0.0,
                   "default_eps": 40.0, "feedparser": "6", "rss_main_mb": 50.0,
                   "rss_children_mb": [], "parallel": {"procs": 2, "eps": 50.0,
                   "other_cpu": 0.0}}],
    }  # fmt: skip
    summary = feeds.summarise(runs, args)
    feeds.print_table(summary, args, generator_mb=30.0)
    out = capsys.readouterr().out
    assert re.search(r"304 round: polls/s\s+100\s+200\s+25\s+4\.00x\s+8\.00x", out)
    assert "Target 4x, Tidings 304 round vs reader: 4.00x -> met" in out
    assert "Target 0.7x, Tidings first round vs the 2-process bare floor: 0.80x -> met" in out
    assert "every 304-round request conditional and answered 304" in out and "NO" not in out
    assert feeds._label("tidings-2") == "Tidings x2" and feeds._label("tidings-1") == "Tidings"
