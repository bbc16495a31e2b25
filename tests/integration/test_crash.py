"""kill -9 during ingest loses and duplicates nothing (on the session's store).

A few hundred loopback feeds grow between rounds; each round starts `tidings
poller`, kills it with SIGKILL at a random moment once it is fetching, and
then checks what a crash must never break: every source's saved state (its
ETag names the feed's version) has all that version's entries stored, and no
entry is stored twice. A state saved without its events would lose them for
good, since the next poll gets 304 Not Modified. Last, one `tidings poll`
brings every source up to date, and every entry served is there once.

And a crash blinds no source for long: the claims of a killed poller lapse
within seconds while a live poller's claims hold for as long as its polls
run, so another poller takes the dead one's sources soon and never a live
one's.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from aggregator.config import load_config
from aggregator.poller import LEASE
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


RECOVERY_TARGET = 30.0  # seconds after a crash by which every source is polled again


def test_a_killed_pollers_sources_are_polled_again_within_seconds(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """Poller A claims every source, slow ones among them (a fetch that
    outlasts a claim's lease); B starts while A's slow fetches run, and A is
    killed with SIGKILL after its claims would have lapsed had it not renewed
    them. No source is ever fetched by both at once, and every source (a 5 s
    interval) is fetched again within RECOVERY_TARGET of the kill."""
    fast, slow, slow_fetch = 40, 4, LEASE + 12
    for feed in range(fast):
        serve(feed_server, feed, 3)
    # The slow feeds on a host of their own: they take all its connections
    # (http.per_host), which must not hold up the others.
    slow_server = FeedServer().__enter__()
    body = rss([{"guid": "s", "title": "slow"}])
    for k in range(slow):  # no ETag: every poll of it drips the whole body again
        slow_server.put(f"/slow{k}.xml", body, drip=slow_fetch / len(body))
    urls = [feed_server.url(f"/f{i}.xml") for i in range(fast)]
    urls += [slow_server.url(f"/slow{k}.xml") for k in range(slow)]
    tables = (feed_source(f"s{n}", url) for n, url in enumerate(urls))
    config = write_config(tmp_path, "".join(tables))
    paths = [urlsplit(url).path for url in urls]
    a = TidingsProcess(config, "poller", log="a.log").start()
    b = TidingsProcess(config, "poller", log="b.log")
    try:
        for k in range(slow):
            slow_server.wait_for_hit(f"/slow{k}.xml", timeout=30)
        claimed = time.monotonic()  # A holds the slow sources from about here
        b.start()
        # Past the lapse of A's first claims, while their fetches still run.
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert a.proc is not None
            a.proc.wait(max(0.0, claimed + LEASE + 3 - time.monotonic()))
        a.kill()
        assert a.proc.returncode == -signal.SIGKILL, "A ended before the kill"
        killed = time.monotonic()
        deadline = killed + RECOVERY_TARGET + 30
        while time.monotonic() < deadline:
            after: dict[str, float] = {}  # each path's first request since the kill
            for path, t in feed_server.arrivals + slow_server.arrivals:
                if t > killed:
                    after.setdefault(path, t)
            if len(after) == len(paths):
                break
            with contextlib.suppress(TimeoutError):  # none a while: look again
                feed_server.wait_for_requests(len(feed_server.requests) + 1, timeout=1)
        unpolled = sorted(set(paths) - set(after))
        assert not unpolled, f"not polled within {deadline - killed:.0f}s of the kill: {unpolled}"
        recovery = max(after.values()) - killed
        slowest = max(after, key=after.__getitem__)
        print(f"every source polled again {recovery:.1f}s after the kill (last: {slowest})")
        assert recovery <= RECOVERY_TARGET
        both = feed_server.overlapped + slow_server.overlapped
        assert not both, f"fetched by two pollers at once: {both}"
    finally:
        a.kill()
        b.kill()
        slow_server.__exit__()
