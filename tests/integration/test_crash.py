"""kill -9 during ingest loses and duplicates nothing (on the session's store).

A few hundred loopback feeds grow between rounds; each round starts `tidings
poller`, kills it with SIGKILL at a random moment once it is fetching, and
then checks what a crash must never break: every source's saved state (its
ETag names the feed's version) has all that version's entries stored, and no
entry is stored twice. A state saved without its events would lose them for
good, since the next poll gets 304 Not Modified. Last, one `tidings poll`
brings every source up to date, and every entry served is there once.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from aggregator.config import load_config
from aggregator.store import Store
from aggregator.store.schema import events, sources
from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.integration

FEEDS = 300
KILLS = 20
SEED = 20261206


def serve(feed_server: FeedServer, feed: int, count: int) -> None:
    items = [{"guid": f"f{feed}-{k}", "title": f"feed {feed} item {k}"} for k in range(count)]
    feed_server.put(f"/f{feed}.xml", rss(items), etag=f'"v{count}"')


def check(store: Store, served: list[int]) -> int:
    """Assert the crash invariants; return how many sources are behind what
    is served (polled before the kill or not at all)."""
    with store._read.connect() as conn:
        stored = Counter(conn.execute(select(events.c.source_id, events.c.external_id)).all())
        states = dict(conn.execute(select(sources.c.id, sources.c.state)).all())
    twice = [key for key, n in stored.items() if n > 1]
    assert not twice, f"stored twice: {twice[:5]}"
    behind = 0
    for feed in range(FEEDS):
        sid = f"feed{feed}"
        etag = (states.get(sid) or {}).get("etag")
        saved = int(etag.strip('"v')) if etag else 0
        missing = [k for k in range(saved) if (sid, f"f{feed}-{k}") not in stored]
        assert not missing, f"{sid}: state {etag} saved without entries {missing[:5]}"
        behind += saved < served[feed]
    return behind


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    served = [rng.randint(5, 25) for _ in range(FEEDS)]
    for feed, count in enumerate(served):
        serve(feed_server, feed, count)
    feeds = "".join(feed_source(f"feed{i}", feed_server.url(f"/f{i}.xml")) for i in range(FEEDS))
    config = write_config(tmp_path, feeds)
    store = Store(load_config(config).store_url)
    cut_short = 0
    try:
        for _ in range(KILLS):
            for feed in rng.sample(range(FEEDS), FEEDS // 3):  # new entries upstream
                served[feed] += rng.randint(1, 3)
                serve(feed_server, feed, served[feed])
            # Time passes: the killed poller's leases run out, every source is due.
            with store._writing() as conn:
                conn.execute(update(sources).values(next_poll_at=datetime.now(UTC)))
            fetched = len(feed_server.requests)
            poller = TidingsProcess(config, "poller", log="poller.log").start()
            assert poller.proc is not None
            try:
                feed_server.wait_for_requests(fetched + 1, timeout=30)
                # At a random moment once it fetches (waiting on the process,
                # which must not end by itself: asserted below).
                with contextlib.suppress(subprocess.TimeoutExpired):
                    poller.proc.wait(rng.uniform(0.0, 1.5))
            finally:
                poller.kill()
            assert poller.proc.returncode == -signal.SIGKILL, "it ended before the kill"
            cut_short += check(store, served) > 0
        print(f"{KILLS} kills with SIGKILL, {cut_short} of them in mid-ingest")
        # Most kills must land mid-ingest, or this test proves little.
        assert cut_short >= KILLS // 2, f"only {cut_short} of {KILLS} kills cut ingest short"
        done = subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "poll", "--config", str(config)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert check(store, served) == 0
        with store._read.connect() as conn:
            assert len(conn.execute(select(events.c.id)).all()) == sum(served)
    finally:
        store.close()
