"""Polling against a real loopback HTTP server: conditional GETs, broken
sources, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.poller import Poller
from aggregator.store import Store
from tests import support
from tests.support import FeedServer, rss, write_config

pytestmark = pytest.mark.integration


def feed_source(sid: str, url: str) -> str:
    return support.feed_source(sid, url, interval="1m")  # the backoff checks assume 1m


async def poll_all(config_path: Path) -> tuple[Store, list]:
    config = load_config(config_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)
    try:
        outcomes = await poller.poll_now()
    finally:
        await poller.aclose()
    return store, outcomes


async def test_an_all_304_round_stores_nothing(feed_server: FeedServer, tmp_path: Path) -> None:
    items = [{"guid": f"g{i}", "title": f"T{i}"} for i in range(5)]
    feed_server.put("/f.xml", rss(items), etag='"abc"')
    config = write_config(tmp_path, feed_source("f", feed_server.url("/f.xml")))
    store, outcomes = await poll_all(config)
    assert len(outcomes[0].new_event_ids) == 5
    before = store.max_event_id()
    store.close()
    store, outcomes = await poll_all(config)
    assert outcomes[0].not_modified and outcomes[0].new_event_ids == []
    assert store.max_event_id() == before
    state = store.source_state("f")[0] or {}
    assert (state["etag"], state["last_modified"], state["identity"]) == ('"abc"', None, "guid")
    assert feed_server.requests[-1][1].get("If-None-Match") == '"abc"'
    store.close()


async def test_broken_sources_are_recorded_and_never_stop_the_others(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/good.xml", rss([{"guid": "1", "title": "Fine"}]))
    feed_server.put("/500.xml", b"oops", status=500)
    feed_server.put("/garbage.xml", b"\x00\xff not xml at all <<<", content_type="text/plain")
    feed_server.put("/slow.xml", rss([{"guid": "s", "title": "Slow"}]), delay=3.5)
    feed_server.put("/huge.xml", b"<rss>" + b"x" * 300_000 + b"</rss>")
    sources = "".join(
        feed_source(name, feed_server.url(f"/{name}.xml"))
        for name in ("good", "500", "garbage", "slow", "huge")
    ) + feed_source("gone", feed_server.url("/missing.xml"))
    config = write_config(tmp_path, sources)
    config.write_text(
        config.read_text().replace("read_timeout = 2", "read_timeout = 1\nmax_body_bytes = 100000")
    )
    started = datetime.now(UTC)
    store, outcomes = await poll_all(config)
    by_id = {o.source_id: o for o in outcomes}
    assert by_id["good"].error is None and len(by_id["good"].new_event_ids) == 1
    assert "HTTP 500" in (by_id["500"].error or "")
    assert "not an RSS/Atom/JSON feed" in (by_id["garbage"].error or "")
    assert "timed out" in (by_id["slow"].error or "")
    assert "larger than 100000 bytes" in (by_id["huge"].error or "")
    assert "HTTP 404" in (by_id["gone"].error or "")
    status = {s.id: s for s in store.source_statuses(viewer=None)}
    for sid in ("500", "garbage", "slow", "huge", "gone"):
        assert status[sid].consecutive_failures == 1
        assert status[sid].last_error == by_id[sid].error
        # Backoff: twice the 1m interval after one failure, less at most 10% jitter.
        assert status[sid].next_poll_at is not None
        assert (status[sid].next_poll_at - started).total_seconds() >= 107
    assert status["good"].consecutive_failures == 0 and status["good"].event_count == 1
    store.close()


def test_cli_poll_and_sources(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.put("/f.xml", rss([{"guid": "1", "title": "From the CLI"}]), etag='"x"')
    feed_server.put("/bad.xml", b"nope", status=503)
    config = write_config(
        tmp_path,
        feed_source("f", feed_server.url("/f.xml"))
        + feed_source("bad", feed_server.url("/bad.xml")),
    )

    def tidings(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator.cli", *args, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    first = tidings("poll")
    assert first.returncode == 0, first.stderr
    assert "f: 1 new" in first.stdout and "From the CLI" in first.stdout
    assert "bad: error: HTTP 503" in first.stdout
    again = tidings("poll", "f")
    assert again.returncode == 0 and "f: 0 new (not modified)" in again.stdout
    table = tidings("sources")
    assert table.returncode == 0
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "failing x1" in lines["bad"] and "HTTP 503" in lines["bad"]
    assert lines["f"].split()[2] == "ok" and lines["f"].split()[-1] == "1"  # 1 event, no error
    unknown = tidings("poll", "nope")
    assert unknown.returncode == 2 and "no source 'nope'" in unknown.stderr


def test_cli_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "aggregator.cli", "--version"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.startswith("tidings ")
    for cmd in ("serve", "poll", "sources", "check-config"):
        res = subprocess.run([sys.executable, "-m", "aggregator.cli", cmd, "--help"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert "usage: tidings" in res.stdout


async def test_two_pollers_drain_one_store_without_polling_a_source_twice(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    import asyncio

    sources = ""
    for i in range(30):
        feed_server.put(
            f"/f{i}.xml", rss([{"guid": f"g{i}-{n}", "title": f"T{n}"} for n in range(3)])
        )
        sources += feed_source(f"f{i}", feed_server.url(f"/f{i}.xml"))
    config = load_config(write_config(tmp_path, sources))
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    one, two = Poller(config, store), Poller(config, store)
    try:
        a, b = await asyncio.gather(one.drain(), two.drain())
    finally:
        await one.aclose()
        await two.aclose()
    polled = [o.source_id for o in a + b]
    assert sorted(polled) == sorted(f"f{i}" for i in range(30))  # each exactly once
    assert store.max_event_id() == 90
    assert all(feed_server.hits(f"/f{i}.xml") == 1 for i in range(30))
    store.close()


def test_poller_processes_share_the_due_list_and_stop_cleanly(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    import signal
    import time

    for i in range(10):
        feed_server.put(f"/p{i}.xml", rss([{"guid": f"p{i}", "title": f"P{i}"}]), etag=f'"{i}"')
    config = write_config(
        tmp_path, "".join(feed_source(f"p{i}", feed_server.url(f"/p{i}.xml")) for i in range(10))
    )
    log = (tmp_path / "pollers.log").open("wb")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aggregator.cli", "poller", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        for i in range(10):
            feed_server.wait_for_hit(f"/p{i}.xml", timeout=30)
        store = Store(load_config(config).store_url)
        deadline = time.monotonic() + 30
        while store.max_event_id() < 10 and time.monotonic() < deadline:
            time.sleep(0.1)  # the commit follows the fetch; nothing to await across processes
        assert store.max_event_id() == 10
        titles = sorted(e.title for e in store.latest_events(viewer=None, limit=50))
        assert titles == sorted(f"P{i}" for i in range(10))
        store.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(20) for proc in procs]
        log.close()
    assert codes == [0, 0], (tmp_path / "pollers.log").read_text()


def test_the_poll_log_never_shows_a_urls_token(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.put("/t.xml?token=s3cret-t0ken", rss([{"guid": "1", "title": "Tokened"}]))
    feed_server.put("/bad.xml?token=s3cret-t0ken", b"nope", status=500)
    config = write_config(
        tmp_path,
        feed_source("t", feed_server.url("/t.xml?token=s3cret-t0ken"))
        + feed_source("bad", feed_server.url("/bad.xml?token=s3cret-t0ken")),
    )
    run = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "poll", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and "t: 1 new" in run.stdout
    assert "bad: error: HTTP 500" in run.stdout
    assert "s3cret-t0ken" not in run.stdout + run.stderr
