"""Unread counts of a user's saved streams, on bench.history's generated events.

    python -m bench.unread                      # 1,000,000 events, 20 streams (make bench)
    python -m bench.unread --events 100000      # a quick look

The dashboard asks for every stream's unread count on each load
(`GET /api/streams` -> `Streams.unread_counts`). On a copy of bench.history's
cached database, a member (who sees about half the sources) gets 20 saved
streams: words from common to rare, tags, sources, kinds, an author,
combinations with negations, and one `since:` a week before the data's
newest events, as people save them. Each
call counts all 20 streams, as the dashboard does, with two backlogs:

- "a day": every stream last read 3,000 events ago (about a day here);
- "a month": 90,000 events ago, most streams past the count's cap (1,000).

Three situations:

- first: the first count of these backlogs anywhere (no count kept in the
  process or in the store): every backlog counted in full, and the counts
  written to the store. That happens when someone comes back to streams
  nobody counted while they were away;
- restart: every call a new process (or another web worker), after 100
  more events each time: it takes the counts up from the store, which the
  first situation left 100 to 3,100 events behind (a reload's short count
  is not written);
- warm: a reload after 100 new events arrived (bench.history's generator,
  inserted as the poller does, FTS triggers included): what the dashboard
  costs while people use it.

The floor is the same SQL statements (captured from SQLAlchemy, bound values
included) run through the stdlib sqlite3 module on the same database, calls
alternating. The target (issue 15) is 50 ms for 20 streams, at p95.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.feeds import environment, package_version
from bench.history import (
    ANCHOR,
    INSERT_EVENTS,
    RESULTS,
    Result,
    _captured,
    _percentile,
    build_database,
    cached_paths,
    generate_rows,
    member_sources,
    nearest,
)

TARGET_MS = 50.0
BACKLOGS = {"a day": 3_000, "a month": 90_000}
ARRIVING = 100  # new events between two warm loads


def stream_queries(meta: Result) -> list[str]:
    """20 queries over what the generated events hold, by their share of them."""
    n = meta["events"]
    ids = [s for s, _, _ in meta["sources"]]
    member = member_sources(ids)
    visible = [(s, c) for s, _, c in meta["sources"] if s in member]
    words = [tuple(x) for x in meta["words"] if len(x[0]) >= 3]
    common = nearest(words, n, (0.4, 0.2))
    medium = nearest(words, n, (0.02, 0.005))
    rare = nearest(words, n, (0.0003, 0.0001))
    tags = nearest([tuple(x) for x in meta["tags"]], n, (0.15, 0.03, 0.005))
    src = nearest(visible, n, (0.1, 0.01, 0.001))
    kinds = sorted({k for s, k, _ in meta["sources"] if s in member})
    author = nearest([tuple(x) for x in meta["authors"]], n, (0.002,))[0]
    return [
        *common,
        *medium,
        *rare,
        *(f"tag:{t}" for t in tags),
        *(f"source:{s}" for s in src),
        f"kind:{kinds[0]}",
        f'author:"{author}"',
        f"{common[0]} tag:{tags[0]}",
        f"{medium[0]} -tag:{tags[1]}",
        f"source:{src[0]} {common[1]}",
        f"kind:{kinds[-1]} -{common[0]}",
        f"{rare[0]} OR {medium[1]}",
        # since:7d as of the data's "now" (the store's clock is today's).
        f"since:{(ANCHOR - timedelta(days=7)).date().isoformat()}",
    ][:20]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30, help="calls per backlog and side")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(
        environment(f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {package_version('sqlalchemy')}")
    )
    db, _ = cached_paths(args.events, args.cache_dir)
    if not db.exists():
        print(f"generating {args.events:,} events into {db} ...", flush=True)
    db, meta = build_database(args.events, args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "unread.db"
        shutil.copyfile(db, copy)  # the streams and marks go in a copy, not the cache
        measure(f"sqlite:///{copy}", meta, args)
    return 0


def measure(url: str, meta: Result, args: argparse.Namespace) -> None:
    from sqlalchemy import delete, update

    from aggregator.store import Store
    from aggregator.store.schema import streams as streams_table
    from aggregator.store.schema import unread_counts
    from aggregator.store.unread import UnreadCounts
    from aggregator.visibility import Viewer

    store = Store(url)
    store.optimize()
    member = member_sources([s for s, _, _ in meta["sources"]])
    viewer = Viewer("member", member)
    user = store.people.create_user("member", password_hash=None, actor="bench", now=ANCHOR)
    queries = stream_queries(meta)
    made = [
        store.streams.create(user.id, f"s{i}", q, now=ANCHOR, viewer=viewer).id
        for i, q in enumerate(queries)
    ]
    newest = max(s.last_read_id for s in store.streams.list(user.id))
    raw = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    arrivals = (args.runs + 1) * 2 * len(BACKLOGS)  # restart and warm arrive before each call
    arriving = generate_rows(arrivals * ARRIVING, seed=7, batch=ARRIVING)

    def counts() -> dict[int, int]:
        return store.streams.unread_counts(user.id, viewer=viewer)

    def restart() -> None:  # a new process: the store's counts, none in memory
        store.streams._unread = UnreadCounts(store.search, store._writing)

    def forget() -> None:  # no count kept anywhere
        restart()
        with store._writing() as conn:
            conn.execute(delete(unread_counts))

    def arrive_and_restart() -> None:
        arrive()
        restart()

    def arrive() -> None:
        raw.execute("BEGIN")
        raw.executemany(INSERT_EVENTS, next(arriving))
        raw.execute("COMMIT")

    print(f"{len(queries)} streams: {', '.join(queries)}\n")
    print(f"{'':<20} {'Tidings p50':>12} {'p95':>8} {'floor p50':>10} {'ratio':>6}  target")
    for label, back in BACKLOGS.items():
        with store._writing() as conn:
            conn.execute(
                update(streams_table)
                .where(streams_table.c.id.in_(made))
                .values(last_read_id=newest - back)
            )
        situations = (("first", forget), ("restart", arrive_and_restart), ("warm", arrive))
        for situation, before in situations:
            before()
            with _captured(store._read) as statements:
                found = counts()
            sql = [(s, p) for s, p in statements if "count(*)" in s.lower()]
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(args.runs):
                before()
                started = time.perf_counter()
                counts()
                ours.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                for statement, params in sql:
                    raw.execute(statement, params).fetchall()
                theirs.append((time.perf_counter() - started) * 1000)
            p50, p95 = statistics.median(ours), _percentile(ours, 0.95)
            f50 = statistics.median(theirs)
            verdict = "met" if p95 <= TARGET_MS else "MISSED"
            print(
                f"{label + ', ' + situation:<20} {p50:>9.1f} ms {p95:>5.1f} ms {f50:>7.1f} ms "
                f"{p50 / f50:>5.2f}x  p95 <= {TARGET_MS:g} ms {verdict}"
            )
        print(f"{'':<20} counts {sorted(found.values())}")
        forget()
        print(f"{'':<20} slowest first: {_slowest(store, user.id, viewer, made, queries)}")
    raw.close()
    store.close()


def _slowest(store: Any, user_id: int, viewer: Any, made: list[int], queries: list[str]) -> str:
    timed = []
    for stream_id, query in zip(made, queries, strict=True):
        started = time.perf_counter()
        store.streams.unread_counts(user_id, viewer=viewer, stream_id=stream_id)
        timed.append(((time.perf_counter() - started) * 1000, query))
    timed.sort(reverse=True)
    return ", ".join(f"{q!r} {ms:.1f} ms" for ms, q in timed[:3])


if __name__ == "__main__":
    sys.exit(main())
