"""History and full-text search against the peer, `reader`, on the same events (issue 15).

    python -m bench.history_reader                             # 100,000 events
    python -m bench.history_reader --events 20000 --runs 40    # a quick look
    python -m bench.history --peer none                        # bench.history without it

reader (lemon24's feed-reader library, PyPI `reader`) is the closest Python
peer: SQLite, full text in FTS5, tags on entries. bench.history runs this after
its own report (`--peer-events`, 100,000 by default).

The data. The events are bench/history.py's (`generate_rows`, the same seed and
generator version). Tidings reads them from bench.history's own cached database
at this size (built when missing). reader gets one feed per Tidings source
(URL `tidings:<source id>`, titled as Tidings titles the source) and one entry
per event: id = the event's external id; title, link, summary, published and
author (name and email) the event's; content = the event's HTML as one
text/html content; updated left empty, as the generator leaves it. An event's
tags become the entry's tags. The load goes through reader's own update path,
the fastest supported one found in reader 3.26: `update_feeds(scheduled=False)`
with a retriever and a parser mounted on `reader._parser` for `tidings:` URLs
(the parser API that reader's own plugins use; documented, marked unstable),
each feed's entries in its first update, so that reader sorts them by published
date. It stores about 4 times as many entries a second as `add_entry()`, which
commits each entry alone. Then `set_tag()` per tag, `enable_search()` and
`update_search()`, which takes most of the time: it reads every entry back and
strips its HTML with BeautifulSoup. As the Tidings build does, the load runs
with `PRAGMA synchronous=OFF` (set on reader's connection, both databases). The
reader database and its `.search` file are cached under bench/results/, keyed
by the event count, the generator's version, reader's version and LOADER_VERSION.

The queries, with the values bench/history.py chooses for them (`build_queries`),
as the admin (reader has no per-user visibility), a page being 50 (limit=51 on
both sides):
- pages, newest first: no filter; `source:X` <-> `get_entries(feed=...)`;
  `tag:T` <-> `get_entries(tags=[T])`. Tidings: `Store.latest_events`.
- full text, newest first: a rare, a medium and a common word and a phrase:
  `Store.latest_events` <-> `search_entries(q, sort='recent')`;
- full text, ranked: `Store.search_events` <-> `search_entries(q, sort='relevant')`.
Tidings' time includes `EventFilter.parse(q)`; each side's includes making its
objects (Tidings: Events; reader: Entries, or for a search EntrySearchResults,
which carry the id and highlighted snippets, not the entry).

Timing. Rounds: in each, every query runs once with its next value on both
sides, who goes first alternating round by round, so a noisy neighbour hits both
alike. A query leaves the rounds after `runs` of them, or earlier once the two
sides have spent `budget` seconds on it together (but not before 5 rounds):
reader's common-word searches take seconds each. Per query and side: median and
p95 (nearest rank) in ms, and the ratio Tidings p50 / reader p50.

Agreement, checked before the timing, with every value once (it warms caches):
- Pages. reader sorts a first update by published date, Tidings by arrival
  (event id), so the pages differ by design. Checked: reader's page holds exactly
  the 51 events with the latest published dates among those the filter selects
  (by SQL on the Tidings database), ids and titles, in that order. Reported: the
  share of Tidings' own page that reader's holds too.
- Full text. Tidings indexes title, summary and author name (unicode61, no
  stemming); reader title, summary, the content (HTML stripped) and the feed's
  title, with the Porter stemmer. So reader finds more. Checked: every event
  Tidings finds (all of them, by the floor's SQL) with the term in its title or
  summary is among reader's results (those it finds by the author's name alone
  are counted apart), and no event reader finds but Tidings does not has the
  term in its title or summary; reader's extra events are counted by where the
  term is instead (content, feed title, else "stem only": inferred, a word with
  the same Porter stem). With at most CHECK_ALL of reader's results, all of them
  are checked; with more (the common words), reader's first page (newest first)
  only, and Tidings' matches as far back as that page goes. Ranked: reported,
  the share of Tidings' 51 that reader's 51 hold too (the text ranked and the
  weights differ).

At 100,000 events the reader load took 158 s here (2 cores, other work running):
generating 5 s, entries 15 s, tags 5 s, update_search 130 s; about 2 KB of
memory an event while loading. 200,000 would take over 5 minutes, hence the size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.feeds import _machine_busy, environment, package_version
from bench.history import (
    ANCHOR,
    GENERATOR_VERSION,
    PAGE,
    RESULTS,
    SQLITE_FLOOR,
    Result,
    _ms,
    _remove_db,
    _share,
    _sources,
    _stats,
    build_database,
    build_queries,
    cached_paths,
    generate_rows,
)

PEER_EVENTS = 100_000  # loads in 2.5 minutes here; 1,000,000: over 20 minutes and 2 GB
LOADER_VERSION = 1  # bump when what goes into the reader database changes
PREFIX = "tidings:"  # reader feed URLs: tidings:<source id>
BUDGET_S = 20.0  # per query, both sides together, before it leaves the rounds
MIN_ROUNDS = 5
CHECK_ALL = 5000  # reader results fetched whole for the agreement check, at most
# bench.history's queries this compares, by name, with reader's counterpart.
PAGE_QUERIES = ("(no query): all events", "source:X", "tag:T")
TEXT_QUERIES = ("rare word", "medium word", "common word", '"a phrase"')


def feed_url(source_id: str) -> str:
    return f"{PREFIX}{source_id}"


# --- the reader database ------------------------------------------------------------


def reader_paths(events: int, directory: Path) -> tuple[Path, Path]:
    """The reader database (its search index beside it, `.search`) and its metadata."""
    stem = (
        f"history-{events}-g{GENERATOR_VERSION}-reader{package_version('reader')}-l{LOADER_VERSION}"
    )
    return directory / f"{stem}.sqlite", directory / f"{stem}.json"


def _remove_reader_db(path: Path) -> None:
    _remove_db(path)
    _remove_db(Path(f"{path}.search"))


# What a reader entry is made of: an event row's columns (bench.history.COLUMNS).
_ID, _TITLE, _SUMMARY, _CONTENT, _URL, _NAME, _EMAIL, _PUBLISHED, _TAGS = (
    2, 6, 7, 8, 9, 10, 11, 13, 15,
)  # fmt: skip


class _GeneratedFeeds:
    """A reader retriever and parser for `tidings:` URLs: a source's generated
    events as the entries of its feed, handed over once (the first update)."""

    def __init__(self, rows: dict[str, list[tuple[Any, ...]]], titles: dict[str, str]) -> None:
        self.rows = rows
        self.titles = titles

    @contextmanager
    def __call__(self, url: str, caching_info: Any, accept: str | None) -> Iterator[Any]:
        yield self.rows.pop(url, [])

    def validate_url(self, url: str) -> None:
        pass  # only the generated sources' URLs are added

    def parse(self, url: str, resource: list[tuple[Any, ...]], headers: Any) -> Any:
        from reader import Author, Content
        from reader._types import EntryData, FeedData

        def entry(r: tuple[Any, ...]) -> EntryData:
            published = datetime.fromisoformat(r[_PUBLISHED]).replace(tzinfo=UTC)
            authors = (Author(name=r[_NAME], email=r[_EMAIL]),) if r[_NAME] else ()
            return EntryData(
                feed_url=url,
                id=r[_ID],
                title=r[_TITLE],
                link=r[_URL],
                authors=authors,
                published=published,
                summary=r[_SUMMARY],
                content=(Content(r[_CONTENT], "text/html"),),
            )

        return FeedData(url=url, title=self.titles[url]), [entry(r) for r in resource]


def build_reader_database(
    events: int, directory: Path, *, fresh: bool = False
) -> tuple[Path, Result]:
    """The cached reader database of `events` events and how it was built (built
    when missing or when `fresh`; see the module docstring)."""
    from reader import make_reader

    db, meta_path = reader_paths(events, directory)
    if db.exists() and Path(f"{db}.search").exists() and meta_path.exists() and not fresh:
        return db, json.loads(meta_path.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    building = db.with_suffix(".building.sqlite")
    _remove_reader_db(building)
    _remove_reader_db(db)
    meta_path.unlink(missing_ok=True)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    # Each feed's entries must come in its first update, so hold them all (about
    # 2 KB an event); the generator mixes the sources.
    rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for batch in generate_rows(events):
        for r in batch:
            rows[feed_url(r[0])].append(r)
    phases["generate"] = time.perf_counter() - started
    # Titled as bench.history.add_sources titles the sources in Tidings.
    titles = {feed_url(s.id): s.id.replace("-", " ").title() for s in _sources()}
    feeds = _GeneratedFeeds(rows, titles)
    reader = make_reader(str(building), search_enabled=None)
    try:
        # A bench fixture need not survive a crash; synchronous is per connection, so
        # it is set on reader's own (this thread's), for both its databases.
        db_conn = reader._storage.factory()  # type: ignore[attr-defined]
        db_conn.execute("PRAGMA synchronous=OFF")
        db_conn.execute("PRAGMA search.synchronous=OFF")
        reader._parser.mount_retriever(PREFIX, feeds)
        for url in titles:
            reader._parser.mount_parser_by_url(url, feeds.parse)
            reader.add_feed(url)
        tags = [(feed_url(r[0]), r[_ID], json.loads(r[_TAGS])) for f in rows.values() for r in f]
        print(f"  reader: {events:,} entries in {len(titles)} feeds (update_feeds) ...", flush=True)
        mark = time.perf_counter()
        for result in reader.update_feeds_iter(scheduled=False):
            if result.error is not None:
                raise RuntimeError(f"reader could not load {result.url}") from result.error
        phases["entries"] = time.perf_counter() - mark
        mark = time.perf_counter()
        n_tags = 0
        for url, entry_id, entry_tags in tags:
            for tag in entry_tags:
                reader.set_tag((url, entry_id), tag)
                n_tags += 1
        del tags
        phases["tags"] = time.perf_counter() - mark
        print(
            f"  reader: entries {phases['entries']:.0f} s, {n_tags:,} tags {phases['tags']:.0f} s;"
            f" search index (update_search, about {events / 800:.0f} s) ...",
            flush=True,
        )
        mark = time.perf_counter()
        reader.enable_search()
        reader.update_search()
        phases["search"] = time.perf_counter() - mark
        count = reader.get_entry_counts().total
    finally:
        reader.close()
    if count != events:
        raise RuntimeError(f"reader holds {count} entries, not {events}")
    for suffix in ("", ".search"):
        Path(f"{building}{suffix}").rename(f"{db}{suffix}")
        for journal in ("-wal", "-shm"):
            Path(f"{building}{suffix}{journal}").unlink(missing_ok=True)
    meta: Result = {
        "events": events,
        "generator": GENERATOR_VERSION,
        "reader": package_version("reader"),
        "loader": LOADER_VERSION,
        "tags": n_tags,
        "seconds": time.perf_counter() - started,
        "phases": phases,
        "bytes": db.stat().st_size,
        "search_bytes": Path(f"{db}.search").stat().st_size,
    }
    meta_path.write_text(json.dumps(meta))
    return db, meta


# --- the queries ----------------------------------------------------------------------


@dataclass
class PeerQuery:
    name: str
    group: str  # "page", "text" (newest first) or "ranked"
    values: list[str]  # Tidings' query text
    tidings: Callable[[str], list[str]]  # -> external ids, as returned
    reader: Callable[[str], list[str]]  # -> entry ids (the same ids), as returned
    samples: dict[str, list[float]] = field(default_factory=dict)  # side -> ms
    spent: float = 0.0  # seconds, both sides


def peer_queries(meta: Result, store: Any, reader: Any) -> list[PeerQuery]:
    """bench.history's queries that reader can answer, each with its counterpart."""
    from aggregator.filters import EventFilter

    def tidings(ranked: bool) -> Callable[[str], list[str]]:
        def run(q: str) -> list[str]:
            flt = EventFilter.parse(q, now=ANCHOR)
            if ranked:
                found = store.search_events(flt, viewer=None, limit=PAGE + 1)
            else:
                found = store.latest_events(flt, viewer=None, limit=PAGE + 1)
            return [e.external_id for e in found]

        return run

    def page(q: str) -> list[str]:
        field_, _, value = q.partition(":")
        if field_ == "source":
            found = reader.get_entries(feed=feed_url(value), limit=PAGE + 1)
        elif field_ == "tag":
            found = reader.get_entries(tags=[value], limit=PAGE + 1)
        else:
            found = reader.get_entries(limit=PAGE + 1)
        return [e.id for e in found]

    def search(sort: str) -> Callable[[str], list[str]]:
        def run(q: str) -> list[str]:
            return [r.id for r in reader.search_entries(q, sort=sort, limit=PAGE + 1)]

        return run

    by_name = {q.name: q for q in build_queries(meta)}
    out = [
        PeerQuery(name, "page", [p.q for p in by_name[name].params], tidings(False), page)
        for name in PAGE_QUERIES
    ]
    for ranked in (False, True):
        suffix = ", ranked" if ranked else ""
        for name in TEXT_QUERIES:
            out.append(
                PeerQuery(
                    f"{name}{suffix}",
                    "ranked" if ranked else "text",
                    [p.q for p in by_name[f"{name}{suffix}"].params],
                    tidings(ranked),
                    search("relevant" if ranked else "recent"),
                )
            )
    return out


# --- agreement ------------------------------------------------------------------------


def _tokens(text: str | None) -> list[str]:
    """Words as FTS5's unicode61 tokenizer splits them (the generator's text is ASCII)."""
    return re.findall(r"[^\W_]+", (text or "").lower())


def _has(text: str | None, term: Sequence[str]) -> bool:
    words = _tokens(text)
    n = len(term)
    return any(words[i : i + n] == list(term) for i in range(len(words) - n + 1))


class _Events:
    """Event rows of the Tidings database by external id, for the checks."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.titles = {s.id: s.id.replace("-", " ").title() for s in _sources()}

    def rows(self, ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        # No index on external_id: one pass over the events, looked up in a temporary table.
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (id TEXT PRIMARY KEY)")
        self.conn.execute("DELETE FROM wanted")
        self.conn.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", [(e,) for e in ids])
        self.conn.row_factory = sqlite3.Row
        try:
            rows = self.conn.execute(
                "SELECT events.* FROM events JOIN wanted ON wanted.id = events.external_id"
            ).fetchall()
        finally:
            self.conn.row_factory = None
        return {r["external_id"]: r for r in rows}

    def where(self, row: sqlite3.Row, term: Sequence[str]) -> str:
        """Where `term` is in an event, as reader indexes it."""
        if _has(row["title"], term) or _has(row["summary"], term):
            return "title or summary"
        if _has(re.sub(r"<[^>]*>", " ", row["content_html"] or ""), term):
            return "content"
        if _has(self.titles[row["source_id"]], term):
            return "feed title"
        return "stem only"


def check_page(
    q: PeerQuery,
    value: str,
    floor: tuple[str, tuple[Any, ...]],
    conn: sqlite3.Connection,
    reader: Any,
) -> tuple[list[str], int]:
    """Problems with reader's page for `value`, and how much of Tidings' page it holds."""
    sql, args = floor  # the floor's SQL, ordered by published date instead of id
    by_date = sql.replace("SELECT *", "SELECT external_id, title").replace(
        "ORDER BY id DESC", "ORDER BY published DESC"
    )
    expected = conn.execute(by_date, (*args, PAGE + 1)).fetchall()
    theirs = q.reader(value)
    titled = [(e, reader.get_entry((feed_url(e.rpartition(":")[0]), e)).title) for e in theirs]
    problems = []
    if titled != [tuple(x) for x in expected]:
        problems.append(
            f"{q.name} [{value}]: reader {titled[:2]}..., newest by published {expected[:2]}..."
        )
    return problems, _in_both(q.tidings(value), theirs)


def _in_both(mine: Sequence[str], theirs: Sequence[str]) -> int:
    """The share of Tidings' results that reader returns too, in per cent."""
    return round(100 * len(set(mine) & set(theirs)) / len(mine)) if mine else 100


def check_text(
    q: PeerQuery, value: str, events: _Events, reader: Any
) -> tuple[list[str], str, Counter[str]]:
    """Problems with reader's matches for `value`, the counts, and where the
    term is in the events only reader finds."""
    term = _tokens(value)
    match = SQLITE_FLOOR.text(" ".join(term))
    mine = dict(
        events.conn.execute(
            "SELECT external_id, published FROM events WHERE id IN "
            "(SELECT rowid FROM events_fts WHERE events_fts MATCH ?)",
            (match,),
        ).fetchall()
    )
    total = reader.search_entry_counts(value).total
    whole = total <= CHECK_ALL
    if whole:
        theirs = [r.id for r in reader.search_entries(value, sort="recent")]
    else:
        theirs = q.reader(value)
    rows = events.rows(list(dict.fromkeys([*theirs, *mine])) if whole else theirs)
    if not whole:  # Tidings' matches as far back as reader's page goes
        oldest = min(rows[e]["published"] for e in theirs)
        window = [e for e, published in mine.items() if published >= oldest]
        rows |= events.rows(window)
    else:
        window = list(mine)
    problems = []
    found = set(theirs)
    missing = [e for e in window if e not in found]
    # reader does not index authors: an event whose author alone matches is not a miss.
    by_author = [
        e
        for e in missing
        if _has(rows[e]["actor_name"], term) and events.where(rows[e], term) != "title or summary"
    ]
    misses = [e for e in missing if e not in by_author]
    if misses:
        problems.append(f"{q.name} [{value}]: reader misses {len(misses)}, e.g. {misses[:3]}")
    extra: Counter[str] = Counter()
    for e in theirs:
        if e not in mine:
            extra[events.where(rows[e], term)] += 1
    if by_author:
        extra["(Tidings only: author name)"] = len(by_author)
    if extra["title or summary"]:
        problems.append(
            f"{q.name} [{value}]: reader finds {extra['title or summary']} with the term "
            "in title or summary that Tidings does not"
        )
    scope = "" if whole else f" (checked: reader's first {len(theirs)} and Tidings' as far back)"
    return problems, f"Tidings {len(mine):,}, reader {total:,}{scope}", extra


# --- measuring ------------------------------------------------------------------------


def compare(
    *,
    events: int = PEER_EVENTS,
    runs: int = 200,
    budget: float = BUDGET_S,
    cache_dir: Path = RESULTS,
    fresh: bool = False,
) -> Result:
    """Build (or reuse) both databases at `events`, check, time and print the
    report (see the module docstring); returns every figure."""
    try:
        import reader as reader_pkg
    except ModuleNotFoundError:
        print("\nreader is not installed: pip install -e '.[bench]' (it needs sgmllib3k)")
        return {}
    os.environ.setdefault("TIDINGS_DISABLE_PLUGINS", "1")
    from aggregator.store import Store

    print(f"\nPeer: reader {reader_pkg.__version__} on the same {events:,} events", flush=True)
    if fresh or not cached_paths(events, cache_dir)[0].exists():
        print(f"  Tidings: generating {events:,} events ...", flush=True)
    db, meta = build_database(events, cache_dir, fresh=fresh)
    if fresh or not reader_paths(events, cache_dir)[0].exists():
        print(f"  reader: generating {events:,} events ...", flush=True)
    rdb, rmeta = build_reader_database(events, cache_dir, fresh=fresh)
    store = Store(f"sqlite:///{db}")  # as at start-up: migrate (nothing to do), optimize
    store.optimize()
    reader = reader_pkg.make_reader(str(rdb), search_enabled=None)
    conn = sqlite3.connect(db)
    try:
        queries = peer_queries(meta, store, reader)
        floors = {
            (q.name, p.q): p.floor
            for q in build_queries(meta)
            for p in q.params
            if p.floor is not None
        }
        problems: list[str] = []
        shared: dict[str, list[int]] = {}
        counts: list[str] = []
        events_db = _Events(conn)
        for q in queries:
            for value in q.values:
                if q.group == "page":
                    found, same = check_page(q, value, floors[(q.name, value)], conn, reader)
                    problems += found
                    shared.setdefault(q.name, []).append(same)
                elif q.group == "text":
                    found, count, extra = check_text(q, value, events_db, reader)
                    problems += found
                    where = ", ".join(f"{n} by {k}" for k, n in extra.most_common())
                    counts.append(f"{q.name} {value}: {count}; reader's extra: {where or 'none'}")
                else:
                    same = _in_both(q.tidings(value), q.reader(value))
                    shared.setdefault(q.name, []).append(same)
        calls = 0
        busy0, cpu0, wall0 = _machine_busy(), time.process_time(), time.perf_counter()
        for i in range(runs):
            active = [q for q in queries if i < MIN_ROUNDS or q.spent < budget]
            if not active:
                break
            for q in active:
                value = q.values[i % len(q.values)]
                sides = (("tidings", q.tidings), ("reader", q.reader))
                for side, run in sides if i % 2 == 0 else sides[::-1]:
                    started = time.perf_counter()
                    run(value)
                    elapsed = time.perf_counter() - started
                    q.spent += elapsed
                    q.samples.setdefault(side, []).append(elapsed * 1000)
                    calls += 1
        wall = time.perf_counter() - wall0
        own = time.process_time() - cpu0
        others = max(0.0, _machine_busy() - busy0 - own)
    finally:
        conn.close()
        reader.close()
        store.close()
    result: Result = {
        "events": events,
        "reader": reader_pkg.__version__,
        "tidings_db": str(db),
        "reader_db": str(rdb),
        "reader_load": rmeta,
        "queries": [
            {
                "name": q.name,
                "group": q.group,
                "values": q.values,
                "stats": {side: _stats(v) for side, v in q.samples.items()},
                "shared": shared.get(q.name),
                "samples": q.samples,
            }
            for q in queries
        ],
        "problems": problems,
        "counts": counts,
        "calls": calls,
        "wall_s": wall,
        "cpu_s": own,
        "other_cores": others / wall if wall else 0.0,
        "runs": runs,
        "budget_s": budget,
    }
    print_report(meta, result)
    return result


# --- reporting ----------------------------------------------------------------------


GROUPS = {
    "page": "Pages, newest first: latest_events / get_entries "
    "(Tidings: newest by arrival; reader: by published date)",
    "text": "Full text, newest first: latest_events / search_entries(sort='recent')",
    "ranked": "Full text, ranked: search_events / search_entries(sort='relevant')",
}


def print_report(meta: Result, result: Result) -> None:
    load = result["reader_load"]
    phases = load["phases"]
    print(
        f"reader database: {result['reader_db']} ({load['bytes'] / 1e6:,.0f} MB, search index "
        f"{load['search_bytes'] / 1e6:,.0f} MB), loaded in {load['seconds']:.0f} s: "
        f"generating {phases['generate']:.0f} s, entries (update_feeds) {phases['entries']:.0f} s,"
        f" {load['tags']:,} tags {phases['tags']:.0f} s, search index (update_search) "
        f"{phases['search']:.0f} s"
    )
    print(f"Tidings database: {result['tidings_db']} ({meta['bytes'] / 1e6:,.0f} MB)")
    print(
        f"Up to {result['runs']} calls per query and side (a query stops once both sides "
        f"spent {result['budget_s']:g} s on it, after {MIN_ROUNDS} at least), each value in "
        f"turn; as the admin (reader has no per-user visibility); page = {PAGE} "
        f"(limit={PAGE + 1}); times in ms; ratio = Tidings p50 / reader p50 (below 1: Tidings "
        "is faster)"
    )
    header = (
        f"{'query':26} {'calls':>5} {'Tidings p50':>11} {'p95':>6} "
        f"{'reader p50':>10} {'p95':>6} {'ratio':>7}  {'in both':>8}"
    )
    last = None
    for q in result["queries"]:
        if q["group"] != last:
            last = q["group"]
            print(f"\n{GROUPS[last]}")
            print(header)
        t, r = q["stats"]["tidings"], q["stats"]["reader"]
        ratio = f"{t['p50'] / r['p50']:.2f}x" if r["p50"] else ""
        shared = q["shared"]
        same = "" if shared is None else f"{min(shared)}-{max(shared)}%"
        print(
            f"{q['name'][:26]:26} {t['n']:>5} {_ms(t['p50']):>11} {_ms(t['p95']):>6} "
            f"{_ms(r['p50']):>10} {_ms(r['p95']):>6} {ratio:>7}  {same:>8}"
        )
    print("\nValues each query cycles through (share of all events Tidings selects):")
    for q in result["queries"]:
        if q["group"] != "ranked":
            values = ", ".join(f"{v or '(empty)'} {_share(meta, v)}" for v in q["values"])
            print(f"  {q['name']}: {values}")
    print(
        "\n'in both': the share of Tidings' results that reader returns too (least-most over "
        "the values). Pages differ by design (arrival order against published date); ranked "
        "searches rank different text with different weights."
    )
    print(
        "Matches (Tidings: title, summary, author; reader: also content and feed title, stemmed):"
    )
    for line in result["counts"]:
        print(f"  {line}")
    if result["problems"]:
        print("\nWARNING: reader and Tidings disagree where their semantics agree:")
        for p in result["problems"]:
            print(f"  {p}")
    else:
        print(
            "Agreement: reader's pages are the events newest by published date that the filter "
            "selects (ids, titles, order); reader's searches find every event Tidings finds, and "
            "the events only reader finds have the term only in their content, feed title or as "
            "a stemmed word."
        )
    print(
        f"\n{result['calls']:,} calls in {result['wall_s']:.0f} s; this process used "
        f"{result['cpu_s'] / result['wall_s']:.2f} cores, other processes "
        f"{result['other_cores']:.2f} of {os.cpu_count() or 1}"
    )
    if result["other_cores"] > 0.25 * (os.cpu_count() or 1):
        print("WARNING: other processes kept the machine busy: the figures are noisy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=PEER_EVENTS)
    parser.add_argument("--runs", type=int, default=200, help="calls per query and side, at most")
    parser.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds per query (both sides), at most"
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild both cached databases")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS, help="the databases")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(
        environment(f"SQLite {sqlite3.sqlite_version}, reader {package_version('reader')}"),
        flush=True,
    )
    result = compare(
        events=args.events,
        runs=args.runs,
        budget=args.budget,
        cache_dir=args.cache_dir,
        fresh=args.fresh,
    )
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
