"""History and full-text search on 1,000,000 events, against the database's own driver.

    python -m bench.history                        # 1,000,000 events in SQLite (make bench)
    python -m bench.history --events 100000 --runs 40    # a quick look
    python -m bench.history --fresh                # rebuild the cached database
    python -m bench.history --explain              # also print every query plan
    python -m bench.history --store postgresql --events 10000000   # PostgreSQL (issue 13)
    python -m bench.history --peer none            # without the peer, reader (history_reader.py)

The database is generated once through the real schema (`Store(url)` runs the
migrations, FTS5 triggers included), filled with bulk `executemany` inserts
that fire those triggers as the poller's inserts do, analysed by
`Store.optimize()` as the server does at start-up, and cached under
bench/results/ keyed by the event count, the generator's version and the
schema's head revision. On PostgreSQL (bench/history_pg.py) the same rows go
in by COPY, each event's tsvector with them, into a database named by the
same key and kept on the server between runs.

Each query is what `GET /api/events` and `GET /api/search` do: timed around
`EventFilter.parse(q)` and `Store.latest_events(flt, viewer=..., limit=51)`
(or `Store.search_events`), for an admin (every source) and for a member who
sees about half the sources. The floor is the same query written by hand as
SQL through the driver alone (the stdlib sqlite3 module, or psycopg) on the
same database: no SQLAlchemy, no Event objects, rows as tuples. The two
alternate call by call, so a noisy neighbour hits both alike, and every query
cycles through several values (a big source and a small one, a common tag and
a rare one...). Before the timing, each value is run once on both sides and
their event ids compared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from aggregator.store.conditions import COMMON_TAG
from bench.feeds import _machine_busy, environment, package_version

GENERATOR_VERSION = 2  # bump when the generated data changes: cached files are keyed by it
PAGE = 50  # what /api/events shows; it asks for one more to tell if another page follows
TARGET_PAGE_P95_MS = 25.0  # the issue: a filtered history page, p95
TARGET_TEXT_P95_MS = 100.0  # ... and a full-text query, p95
TARGET_RANKED_P95_MS = 300.0  # issue 13: a word in most events, ranked, p95
RESULTS = Path(__file__).resolve().parent / "results"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"  # --store postgresql
# The data set's "now": the newest event is a little before it, the oldest a year
# before. Fixed, so a cached file answers `since:7d` the same way every time.
ANCHOR = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
Result = dict[str, Any]

# --- the data -------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


# The vocabulary's head: real words, so that the common words queried read as
# words; synthetic words follow. Ranks follow a Zipf law, so a few words are in
# a third of all events and most are in a handful.
_HEAD = _words(
    """the to of and a in for on is with release update build team new report
review meeting fix deploy service issue error customer project plan server data
support test change security budget version draft design network contract note
policy office invoice backup quarter migration account access schedule incident
request storage outage patch vendor launch training agenda cluster database
merger audit hiring payroll roadmap workshop summary proposal feedback ticket
dashboard pipeline renewal license analysis forecast approval onboarding
compliance capacity benchmark latency firewall upgrade rollout minutes invoice
escalation sprint retrospective backlog milestone"""
)
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
_FIRST = _words(
    """Anna Ben Carla David Eva Felix Greta Hugo Ines Jonas Karin Lukas Mara Nils
Olga Paul Rosa Simon Tara Ulf Vera Walter Yara Zoe Amir Bea Chen Dara Emil Fatima
Goran Hana Ivan Julia Kofi Lena Marco Nadia Oskar Priya"""
)
_LAST = _words(
    """Adams Berg Costa Dietrich Eriksen Fischer Garcia Hansen Ito Jansen Keller
Lindqvist Moreau Novak Olsen Petrov Quint Rossi Schmidt Tanaka Ueda Vogel Weber
Xu Young Zimmer Almeida Brandt Castro Dubois Engel Fuchs Gruber Horvat Iqbal Jung
Kowalski Lopez Meier Nakamura Okafor Pereira Richter Santos Torres Urban Varga
Wagner Yilmaz Ziegler Bauer Kraus Lehmann Marx Neumann Otto Peters Roth Sauer
Thomas"""
)
_TAGS = _words(
    """urgent release security ops design legal finance hr sales support infra
frontend backend mobile docs qa customer incident planning research data ml
marketing compliance audit hiring travel facilities procurement partner"""
)
# What each kind of source produces: (verb, object type, weight).
KINDS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "feed": (("Create", "Article", 0.85), ("Update", "Article", 0.15)),
    "imap": (("Create", "Message", 1.0),),
    "jira": (("Create", "Issue", 0.25), ("Update", "Issue", 0.6), ("Delete", "Issue", 0.03),
             ("Announce", "Issue", 0.12)),
    "github": (("Create", "Note", 0.45), ("Update", "Note", 0.3), ("Delete", "Note", 0.05),
               ("Announce", "Release", 0.2)),
    "webhook": (("Create", "Note", 0.7), ("Announce", "Note", 0.3)),
}  # fmt: skip
_SOURCE_NAMES = _words(
    """platform intranet news payments legal wiki mail-ops mail-sales
helpdesk infra mobile web billing search hr finance security design support
analytics data sales marketing partners press blog status ci releases docs
research facilities procurement travel audit compliance vendors training events
digest board"""
)
N_SOURCES = 40
N_AUTHORS = 2000
N_TAGS = 200
N_VOCAB = 30000
N_PHRASES = 40


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _zipf(n: int, s: float = 1.0, offset: float = 1.0) -> list[float]:
    return _cumulative([1.0 / (rank + offset) ** s for rank in range(n)])


def _vocabulary(rng: random.Random) -> list[str]:
    words = list(dict.fromkeys(_HEAD))
    seen = set(words)
    while len(words) < N_VOCAB:
        syllables = rng.choice((2, 2, 3, 3, 3, 4))
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.4:
            word += rng.choice(_CONSONANTS)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Source:
    id: str
    kind: str
    weight: float


def _sources() -> list[Source]:
    """Zipf-sized: the biggest has about a quarter of the events, most of the
    rest between 3% and half a percent; the last two are quiet (github-events
    and webhook-digest: 0.05% and 0.01% of the events, a weekly digest). Kinds
    go round by size, so each half has every kind."""
    kinds = list(KINDS)
    out = []
    for rank in range(N_SOURCES):
        kind = kinds[rank % len(kinds)]
        weight = {N_SOURCES - 2: 1 / 470, N_SOURCES - 1: 1 / 2350}.get(rank, 1.0 / (rank + 1))
        out.append(Source(f"{kind}-{_SOURCE_NAMES[rank]}", kind, weight))
    return out


def member_sources(sources: Sequence[str]) -> frozenset[str]:
    """The member's sources: every other one by size, about half the events."""
    return frozenset(s for i, s in enumerate(sources) if i % 2 == 1)


def _fmt_time(moment: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy's SQLite DateTime stores it."""
    return moment.isoformat(" ", "microseconds")


COLUMNS = (
    "source_id", "kind", "external_id", "content_hash", "verb", "object_type", "title",
    "summary", "content_html", "url", "actor_name", "actor_email", "actor_url", "published",
    "updated", "tags", "thread_id", "extra", "audience", "ingested_at",
)  # fmt: skip
# One of generate_rows' rows, as the bulk loads write them (SQLite).
INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


def generate_rows(n: int, seed: int = 1, batch: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
    """`n` event rows, oldest first, in batches, as the store keeps them (JSON as
    text, datetimes as SQLAlchemy writes them), in the column order of COLUMNS.
    Deterministic for a seed."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    word_cw = _zipf(len(vocab), 1.0, 2.7)
    phrases = phrases_of(vocab)
    phrase_cw = _zipf(len(phrases), 1.0, 1.0)
    sources = _sources()
    source_cw = _cumulative([s.weight for s in sources])
    kind_choices = {
        k: ([(v, o) for v, o, _ in options], _cumulative([w for _, _, w in options]))
        for k, options in KINDS.items()
    }
    people = authors_of(random.Random(seed + 1))
    author_cw = _zipf(len(people), 1.0, 3.0)
    tags = tags_of(random.Random(seed + 2))
    tag_cw = _zipf(len(tags), 1.0, 1.0)
    audience = {
        s.id: json.dumps(["everyone"] if i % 2 else ["staff"]) for i, s in enumerate(sources)
    }
    hosts = {s.id: f"https://{s.id}.example.org" for s in sources}
    # Contents are slices of one pool of words (not indexed, so no need to draw afresh).
    pool = rng.choices(vocab, cum_weights=word_cw, k=200_000)
    start = ANCHOR - YEAR
    step = YEAR / max(n, 1)
    title_lens = list(range(4, 11))
    summary_lens = list(range(12, 41))
    tag_counts = (0, 1, 1, 1, 1, 2, 2, 3)
    done = 0
    while done < n:
        size = min(batch, n - done)
        srcs = rng.choices(sources, cum_weights=source_cw, k=size)
        tlens = rng.choices(title_lens, k=size)
        slens = rng.choices(summary_lens, k=size)
        words = rng.choices(vocab, cum_weights=word_cw, k=sum(tlens) + sum(slens))
        who = rng.choices(people, cum_weights=author_cw, k=size)
        ntags = rng.choices(tag_counts, k=size)
        tagged = rng.choices(tags, cum_weights=tag_cw, k=sum(ntags))
        at = 0
        tag_at = 0
        rows = []
        for i in range(size):
            number = done + i
            src = srcs[i]
            title_words = words[at : at + tlens[i]]
            at += tlens[i]
            summary_words = words[at : at + slens[i]]
            at += slens[i]
            if rng.random() < 0.25:
                phrase = rng.choices(phrases, cum_weights=phrase_cw)[0]
                title_words.insert(rng.randrange(len(title_words) + 1), phrase)
            title = " ".join(title_words)
            title = title[0].upper() + title[1:]
            summary = " ".join(summary_words) + "."
            offset = rng.randrange(len(pool) - 80)
            content = (
                f"<p>{summary}</p><p>{' '.join(pool[offset : offset + rng.randrange(20, 80)])}"
                f" <a href='{hosts[src.id]}/item/{number}'>more</a></p>"
            )
            (verb, object_type), *_ = rng.choices(
                kind_choices[src.kind][0], cum_weights=kind_choices[src.kind][1]
            )
            name, email = who[i]
            if src.kind == "feed" and rng.random() < 0.1:
                name = email = None
            event_tags = list(dict.fromkeys(tagged[tag_at : tag_at + ntags[i]]))
            tag_at += ntags[i]
            ingested = start + step * (number + rng.random())
            lag = timedelta(seconds=rng.random() ** 3 * 21600)
            rows.append((
                src.id, src.kind, f"{src.id}:{number}", f"{number:032x}", verb, object_type,
                title, summary, content, f"{hosts[src.id]}/item/{number}", name, email, None,
                _fmt_time(ingested - lag), None, json.dumps(event_tags),
                f"thread-{number // 5}" if src.kind in ("imap", "jira") else None, "{}",
                audience[src.id], _fmt_time(ingested),
            ))  # fmt: skip
        done += size
        yield rows


def phrases_of(vocab: Sequence[str]) -> list[str]:
    """Two-word collocations of medium-rank words, put into a quarter of the titles."""
    rng = random.Random(99)
    return [
        f"{rng.choice(vocab[150:2000])} {rng.choice(vocab[150:2000])}" for _ in range(N_PHRASES)
    ]


def authors_of(rng: random.Random) -> list[tuple[str, str]]:
    names = [f"{f} {last}" for f in _FIRST for last in _LAST]
    rng.shuffle(names)
    return [(n, n.lower().replace(" ", ".") + "@example.org") for n in names[:N_AUTHORS]]


def tags_of(rng: random.Random) -> list[str]:
    tags = list(_TAGS)
    while len(tags) < N_TAGS:
        tag = f"{rng.choice(_TAGS)}-{rng.choice(_CONSONANTS)}{rng.choice(_VOWELS)}{len(tags)}"
        tags.append(tag)
    return tags


def _schema_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import aggregator.store as store_pkg

    ini = Path(store_pkg.__file__).with_name("alembic.ini")
    head = ScriptDirectory.from_config(Config(str(ini))).get_current_head()
    return head or "none"


def cached_paths(events: int, directory: Path) -> tuple[Path, Path]:
    stem = f"history-{events}-g{GENERATOR_VERSION}-s{_schema_head()}"
    return directory / f"{stem}.db", directory / f"{stem}.json"


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def add_sources(url: str) -> None:
    """Make the store at `url` (`Store` runs the migrations: the real schema)
    and add the generator's sources to it."""
    from sqlalchemy import insert

    from aggregator.store import Store
    from aggregator.store.schema import sources as sources_table

    store = Store(url)
    try:
        with store._writing() as conn:
            conn.execute(
                insert(sources_table),
                [
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "title": s.id.replace("-", " ").title(),
                        "origin": "file",
                        "config": {"audience": ["everyone"] if i % 2 else ["staff"]},
                        "enabled": True,
                        "consecutive_failures": 0,
                        "created_at": ANCHOR - YEAR - timedelta(days=1),
                    }
                    for i, s in enumerate(_sources())
                ],
            )
    finally:
        store.close()


class Tally:
    """What the generated rows hold, counted as they go in: the values the
    queries choose among by their share of the events, and the load's progress."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.done = 0
        self.per_source: Counter[str] = Counter()
        self.kind_verb: Counter[str] = Counter()
        self.per_tag: Counter[str] = Counter()
        self.per_author: Counter[str] = Counter()
        self.started = time.perf_counter()
        self._next_report = events // 10

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.per_source.update(r[0] for r in rows)
        self.kind_verb.update(f"{r[1]} {r[4]}" for r in rows)
        self.per_tag.update(t for r in rows for t in json.loads(r[15]))
        self.per_author.update(r[10] for r in rows if r[10])
        self.done += len(rows)
        if self.events >= 100_000 and self.done >= self._next_report:
            self._next_report += self.events // 10
            elapsed = time.perf_counter() - self.started
            rate = self.done / elapsed
            print(
                f"  {self.done:,} events, {rate:,.0f}/s, "
                f"{(self.events - self.done) / rate:.0f} s to go ...",
                flush=True,
            )

    def meta(self) -> Result:
        return {
            "events": self.events,
            "generator": GENERATOR_VERSION,
            "schema": _schema_head(),
            "anchor": ANCHOR.isoformat(),
            "sources": [[s.id, s.kind, self.per_source[s.id]] for s in _sources()],
            "kind_verb": self.kind_verb.most_common(),
            "tags": self.per_tag.most_common(),
            "authors": self.per_author.most_common(),
        }


def build_database(events: int, directory: Path, *, fresh: bool = False) -> tuple[Path, Result]:
    """The cached database of `events` events and what it holds (generated when
    missing or when `fresh`)."""
    db, meta_path = cached_paths(events, directory)
    if db.exists() and meta_path.exists() and not fresh:
        return db, json.loads(meta_path.read_text())
    from aggregator.store import Store

    directory.mkdir(parents=True, exist_ok=True)
    building = db.with_suffix(".building.db")
    _remove_db(building)
    _remove_db(db)
    meta_path.unlink(missing_ok=True)
    started = time.perf_counter()
    url = f"sqlite:///{building}"
    add_sources(url)  # the real schema: migrations, FTS5 table and triggers
    tally = Tally(events)
    conn = sqlite3.connect(building, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # a bench fixture: no need to survive a crash
    conn.execute("PRAGMA cache_size=-262144")  # 256 MB: the FTS index and (source_id, id)
    for rows in generate_rows(events):
        conn.execute("BEGIN")
        conn.executemany(INSERT_EVENTS, rows)
        conn.execute("COMMIT")
        tally.add(rows)
    inserted = time.perf_counter() - started
    words = _document_frequencies(conn)
    phrase_df = {
        p: conn.execute(
            "SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", (f'"{p}"',)
        ).fetchone()[0]
        for p in phrases_of(_vocabulary(random.Random(1)))
    }
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    store = Store(url)  # start-up as the server does it: ANALYZE, the statistics are missing
    store.optimize()
    store.close()
    _remove_db(db)
    building.rename(db)
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    meta: Result = {
        **tally.meta(),
        "seconds": time.perf_counter() - started,
        "insert_seconds": inserted,
        "bytes": db.stat().st_size,
        "words": words,
        "phrases": sorted(phrase_df.items(), key=lambda x: -x[1]),
    }
    meta_path.write_text(json.dumps(meta))
    return db, meta


def _document_frequencies(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Every indexed word and the number of events it is in, most common first."""
    conn.execute("CREATE VIRTUAL TABLE temp.bench_vocab USING fts5vocab(main, events_fts, 'row')")
    rows = conn.execute("SELECT term, doc FROM temp.bench_vocab ORDER BY doc DESC").fetchall()
    conn.execute("DROP TABLE temp.bench_vocab")
    return [(t, d) for t, d in rows if t.isalpha()]


# --- the queries ----------------------------------------------------------------------


def nearest(items: Sequence[tuple[str, int]], total: int, fractions: Sequence[float]) -> list[str]:
    """For each fraction, the distinct item whose count is nearest (in ratio) to it."""
    chosen: list[str] = []
    for fraction in fractions:
        want = max(fraction * total, 1.0)
        ranked = sorted(
            (x for x in items if x[0] not in chosen and x[1] > 0),
            key=lambda x: abs((x[1] / want) - 1) if x[1] >= want else abs(want / x[1] - 1),
        )
        if ranked:
            chosen.append(ranked[0][0])
    return chosen


@dataclass
class Param:
    """One value of a query: its text, a cursor, and the floor's SQL and arguments."""

    q: str
    floor: tuple[str, tuple[Any, ...]] | None = None
    cursor_depth: int = 0  # pages to skip first (page 20: 19)
    cursor: dict[str, int | None] = field(default_factory=dict)  # per viewer


@dataclass
class Query:
    name: str
    group: str  # "page", "text" (full text, history order), "ranked", "reference"
    params: list[Param]
    ranked: bool = False
    every: int = 1  # runs in every Nth round only (the slow ones)
    samples: dict[str, list[float]] = field(default_factory=dict)  # "viewer/side" -> ms
    by_value: dict[tuple[int, str], list[float]] = field(default_factory=dict)  # Tidings'


def _quote_author(name: str) -> str:
    return f'author:"{name}"'


@dataclass(frozen=True)
class FloorSql:
    """The floor's SQL on one database, as someone would write it by hand for
    it: the pieces that differ between SQLite and PostgreSQL. Placeholders are
    `?` throughout (psycopg's `%s` is put in when the statement runs)."""

    fold: str  # ASCII letters in lower case, as Tidings compares kinds, verbs and tags
    matches: str  # a condition: the full-text index finds ? in the event
    # A statement: the events matching ?, best first; {viewer} before ORDER BY,
    # {join:...} the join that a condition on events needs (left out without one).
    ranked: str
    text: Callable[[str], str]  # a word or a phrase -> the argument of `matches`
    author: Callable[[str], str]  # a name -> the same, in the author's name only
    moment: Callable[[datetime], Any]  # a naive UTC datetime as the driver takes it


SQLITE_FLOOR = FloorSql(
    fold="lower({})",
    matches="id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)",
    # Ranked as Tidings ranks (aggregator.store.RANK_WITHIN): the newest 20,000
    # matches the viewer may see, scored, best first.
    ranked=(
        "SELECT events.* FROM (SELECT events_fts.rowid AS id, "
        "bm25(events_fts, 4.0, 1.0, 2.0) AS score FROM events_fts "
        "{join:JOIN events ON events.id = events_fts.rowid }WHERE events_fts MATCH ? "
        "{viewer}ORDER BY events_fts.rowid DESC LIMIT 20000) AS ranked "
        "JOIN events ON events.id = ranked.id ORDER BY ranked.score, events.id DESC LIMIT ?"
    ),
    text=lambda words: f'"{words}"',
    author=lambda name: f'actor_name : "{name.lower()}"',
    moment=_fmt_time,
)
_STAR = "SELECT * FROM events WHERE "
_ORDER = " ORDER BY id DESC LIMIT ?"


def has_tag(events_with_it: int) -> str:
    """A condition, the same on both databases: the event has tag ?, read
    from the tags' index as Tidings reads it (aggregator/store/conditions.py):
    a tag on at most COMMON_TAG events listed, a commoner one walked, the
    events newest first, each looked up."""
    if events_with_it > COMMON_TAG:
        return "EXISTS (SELECT 1 FROM event_tags WHERE tag = ? AND event_id = events.id)"
    return "id IN (SELECT event_id FROM event_tags WHERE tag = ?)"


def build_queries(
    meta: Result,
    ranked_too: bool = True,
    ranked_every: int = 4,
    edge_every: int = 10,
    floor: FloorSql = SQLITE_FLOOR,
) -> list[Query]:
    n = meta["events"]
    sources = [(s, k, c) for s, k, c in meta["sources"]]
    ids = [s for s, _, _ in sources]
    member = member_sources(ids)
    kind_of = {s: k for s, k, _ in sources}
    # Values a member may see too, so both viewers run the same parameters.
    visible = [(s, c) for s, _, c in sources if s in member]
    # The last: a quiet source (a weekly digest), whose newest 50 events span months.
    src = nearest(visible, n, (0.2, 0.03, 0.01, 0.0001))
    deep_src = nearest([(s, c) for s, c in visible if c >= 20 * PAGE] or visible, n, (0.1, 0.01))
    kv = nearest([tuple(x) for x in meta["kind_verb"]], n, (0.2, 0.04, 0.008))
    tagged = dict(meta["tags"])
    tags = nearest([tuple(x) for x in meta["tags"]], n, (0.15, 0.03, 0.005))
    deep_tags = nearest([tuple(x) for x in meta["tags"]], n, (0.15, 0.03))
    authors = nearest([tuple(x) for x in meta["authors"]], n, (0.01, 0.002, 0.0003))
    words = [tuple(x) for x in meta["words"]]
    rare = nearest(words, n, (0.0003, 0.0002, 0.0001))
    medium = nearest(words, n, (0.015, 0.01, 0.005))
    # Words, not "a" or "of": they read better in the report.
    common = nearest([w for w in words if len(w[0]) >= 3], n, (0.4, 0.3, 0.2))
    phrases = nearest([tuple(x) for x in meta["phrases"]], n, (0.01, 0.004, 0.002))
    # Two sources of different kinds; the second one's kind is excluded.
    busy = src[:3]
    pairs = [
        (a, b) for a, b in zip(busy, busy[1:] + busy[:1], strict=True) if kind_of[a] != kind_of[b]
    ]
    pairs = pairs or [(src[0], src[-1])]

    def lower_in(column: str) -> str:
        return f"{floor.fold.format(column)} = ?"

    qs = [
        Query("(no query): all events", "reference", [Param("", (_STAR + "true" + _ORDER, ()))]),
        Query(
            "source:X",
            "page",
            [Param(f"source:{s}", (_STAR + "source_id = ?" + _ORDER, (s,))) for s in src],
        ),
        Query(
            "kind:K verb:V",
            "page",
            [
                Param(
                    f"kind:{k} verb:{v}",
                    (_STAR + f"{lower_in('kind')} AND {lower_in('verb')}" + _ORDER, (k, v.lower())),
                )
                for k, v in (x.split() for x in kv)
            ],
        ),
        Query(
            "tag:T",
            "page",
            [
                Param(
                    f"tag:{t}",
                    (
                        _STAR + has_tag(tagged[t]) + _ORDER,
                        (t,),
                    ),
                )
                for t in tags
            ],
        ),
        Query(
            'author:"First Last"',
            "page",
            [
                Param(_quote_author(a), (_STAR + floor.matches + _ORDER, (floor.author(a),)))
                for a in authors
            ],
        ),
        Query(
            "since:7d",
            "page",
            [
                Param(
                    f"since:{d}d",
                    (
                        _STAR + "published >= ?" + _ORDER,
                        (floor.moment(_naive(ANCHOR - timedelta(days=d))),),
                    ),
                )
                for d in (7, 1, 30)
            ],
        ),
        Query(
            "source:X,Y -kind:Z",
            "page",
            [
                Param(
                    f"source:{a},{b} -kind:{kind_of[b]}",
                    (
                        _STAR + f"source_id IN (?, ?) AND NOT {lower_in('kind')}" + _ORDER,
                        (a, b, kind_of[b]),
                    ),
                )
                for a, b in pairs
            ],
        ),
        Query(
            "source:X, page 20 (cursor)",
            "page",
            [
                Param(
                    f"source:{s}",
                    (_STAR + "source_id = ? AND id < ?" + _ORDER, (s,)),
                    cursor_depth=19,
                )
                for s in deep_src
            ],
        ),
        Query(
            "tag:T, page 20 (cursor)",
            "page",
            [
                Param(
                    f"tag:{t}",
                    (
                        _STAR + has_tag(tagged[t]) + " AND id < ?" + _ORDER,
                        (t,),
                    ),
                    cursor_depth=19,
                )
                for t in deep_tags
            ],
        ),
    ]
    text = [
        ("rare word", rare, True),
        ("medium word", medium, True),
        ("common word", common, True),
        ('"a phrase"', phrases, True),
    ]
    for ranked in (False, True) if ranked_too else (False,):
        group = "ranked" if ranked else "text"
        suffix = ", ranked" if ranked else ""
        for label, values, _ in text:
            params = []
            for v in values:
                match = floor.text(v)
                q = f'"{v}"' if " " in v else v
                sql = floor.ranked if ranked else _STAR + floor.matches + _ORDER
                params.append(Param(q, (sql, (match,))))
            qs.append(
                Query(
                    f"{label}{suffix}",
                    group,
                    params,
                    ranked=ranked,
                    every=ranked_every if ranked else 1,
                )
            )
        params = []
        for w, s in zip(medium, itertools.cycle(src), strict=False):
            if ranked:
                sql = floor.ranked.replace("{viewer}", "AND events.source_id = ? {viewer}")
            else:
                sql = _STAR + floor.matches + " AND source_id = ?" + _ORDER
            params.append(Param(f"{w} source:{s}", (sql, (floor.text(w), s))))
        qs.append(
            Query(
                f"medium word source:X{suffix}",
                group,
                params,
                ranked=ranked,
                every=ranked_every if ranked else 1,
            )
        )
    rarest_tag = min(meta["tags"], key=lambda x: x[1])[0]
    oldest = _naive(ANCHOR - YEAR + YEAR / 20)  # the oldest 5% of the events
    qs += [
        Query(
            "source:X, no such source",
            "edge",
            [
                Param(
                    "source:no-such-source", (_STAR + "source_id = ?" + _ORDER, ("no-such-source",))
                )
            ],
            every=edge_every,
        ),
        Query(
            "tag:T, the rarest tag",
            "edge",
            [
                Param(
                    f"tag:{rarest_tag}",
                    (
                        _STAR + has_tag(tagged[rarest_tag]) + _ORDER,
                        (rarest_tag,),
                    ),
                )
            ],
            every=edge_every,
        ),
        Query(
            "until:D, the oldest 5%",
            "edge",
            [
                Param(
                    f"until:{oldest.isoformat(timespec='seconds')}",
                    (_STAR + "published < ?" + _ORDER, (floor.moment(oldest),)),
                )
            ],
            every=edge_every,
        ),
    ]
    return qs


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def floor_sql(
    param: Param, viewer: frozenset[str] | None, cursor: int | None
) -> tuple[str, list[Any]]:
    """The floor's SQL for one value and viewer, with its arguments."""
    assert param.floor is not None
    sql, args = param.floor
    values: list[Any] = list(args)
    if "{viewer}" in sql:  # ranked: the viewer goes before ORDER BY
        join = re.search(r"\{join:([^}]*)\}", sql)
        if join:  # only a condition on the events needs them joined
            needed = viewer is not None or "AND events." in sql
            sql = sql.replace(join.group(0), join.group(1) if needed else "")
        if viewer is None:
            sql = sql.replace("{viewer}", "")
        else:
            sql = sql.replace(
                "{viewer}", f"AND events.source_id IN ({', '.join('?' * len(viewer))}) "
            )
            values += sorted(viewer)
    elif viewer is not None:
        head, _, tail = sql.partition(" ORDER BY ")
        sql = f"{head} AND source_id IN ({', '.join('?' * len(viewer))}) ORDER BY {tail}"
        values += sorted(viewer)
    if param.cursor_depth:
        # The cursor's `?` comes right after the query's own arguments; with fewer
        # pages than asked for, Tidings has no cursor (the first page) and neither
        # does this, in effect.
        values.insert(len(args), 2**62 if cursor is None else cursor)
    return sql, [*values, PAGE + 1]


# --- measuring ------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value at or above a fraction `q` of them."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))]


def _stats(values: Sequence[float]) -> Result:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": _percentile(values, 0.95),
        "max": max(values),
    }


@contextmanager
def _captured(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """The statements `engine` runs meanwhile, with their parameters."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


class Floor(Protocol):
    """The floor's side of one database: its driver alone, rows as tuples."""

    name: str  # the database's, for the report
    sql: FloorSql

    def rows(self, sql: str, values: Any) -> list[tuple[Any, ...]]: ...

    def plan(self, sql: str, values: Any) -> list[str]:
        """How the database runs `sql` (Tidings' statements too)."""
        ...

    def close(self) -> None: ...


class SqliteFloor:
    """The floor on SQLite: the stdlib sqlite3 module on the store's file."""

    name = "SQLite"
    sql = SQLITE_FLOOR

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout=10000")

    def rows(self, sql: str, values: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, values).fetchall()

    def plan(self, sql: str, values: Any) -> list[str]:
        rows = self.conn.execute("EXPLAIN QUERY PLAN " + sql, values).fetchall()
        depth: dict[int, int] = {0: 0}
        out = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            out.append("  " * depth[node] + detail)
        return out

    def close(self) -> None:
        self.conn.close()


def measure(url: str, meta: Result, args: argparse.Namespace) -> Result:
    """Time every query on the store at `url` against the floor (see the module docstring)."""
    os.environ.setdefault("TIDINGS_DISABLE_PLUGINS", "1")
    from aggregator.filters import EventFilter
    from aggregator.store import Store
    from aggregator.visibility import Viewer

    store = Store(url)  # migrate (nothing to do) and optimize, as at start-up
    store.optimize()
    if store.is_sqlite:
        raw: Floor = SqliteFloor(url)
    else:
        from bench.history_pg import PostgresFloor  # psycopg: an optional extra

        raw = PostgresFloor(url)
    member = member_sources([s for s, _, _ in meta["sources"]])
    viewers: dict[str, Viewer | None] = {"admin": None, "member": Viewer("member", member)}
    scopes: dict[str, frozenset[str] | None] = {"admin": None, "member": member}
    queries = build_queries(
        meta,
        ranked_too=not args.no_ranked,
        ranked_every=args.ranked_every,
        edge_every=args.edge_every,
        floor=raw.sql,
    )

    def tidings(q: Query, p: Param, who: str) -> list[int]:
        flt = EventFilter.parse(p.q, now=ANCHOR)
        if q.ranked:
            found = store.search_events(flt, viewer=viewers[who], limit=PAGE + 1)
        else:
            found = store.latest_events(
                flt, viewer=viewers[who], before=p.cursor.get(who), limit=PAGE + 1
            )
        return [e.id for e in found]

    def floor(q: Query, p: Param, who: str) -> list[int]:
        sql, values = floor_sql(p, scopes[who], p.cursor.get(who))
        return [r[0] for r in raw.rows(sql, values)]

    # Cursors for the deep pages, per viewer: page through as a client would.
    for q in queries:
        for p in q.params:
            for who in viewers:
                cursor = None
                flt = EventFilter.parse(p.q, now=ANCHOR)
                for _ in range(p.cursor_depth):
                    page = store.latest_events(
                        flt, viewer=viewers[who], before=cursor, limit=PAGE + 1
                    )
                    if len(page) <= PAGE:
                        break
                    cursor = page[PAGE - 1].id
                p.cursor[who] = cursor
    # Both sides once per value (it warms the caches): they must select the same events.
    mismatches = []
    rows: dict[str, list[int]] = {}
    for q in queries:
        for p in q.params:
            for who in viewers:
                mine = tidings(q, p, who)
                rows.setdefault(f"{q.name}|{who}", []).append(len(mine))
                if p.floor is not None and (theirs := floor(q, p, who)) != mine:
                    mismatches.append(f"{q.name} [{p.q}] as {who}: {mine[:5]} vs {theirs[:5]}")
    plans: list[str] = []
    if args.explain:
        for q in queries:
            p = q.params[0]
            for who in viewers:
                with _captured(store._read) as seen:
                    tidings(q, p, who)
                plans.append(f"{q.name} [{p.q}] as {who}")
                for sql, params in seen:
                    plans += ["  Tidings:", *("  " + x for x in raw.plan(sql, params))]
                if p.floor is not None:
                    sql, values = floor_sql(p, scopes[who], p.cursor.get(who))
                    plans += ["  floor:", *("  " + x for x in raw.plan(sql, values))]

    calls = 0
    busy0, cpu0, wall0 = _machine_busy(), time.process_time(), time.perf_counter()
    for i in range(args.runs):
        for q in queries:
            if i % q.every:
                continue
            index = (i // q.every) % len(q.params)
            p = q.params[index]
            for who in viewers:
                # Alternate which side goes first: neither always finds the caches warm.
                order = ("tidings", "floor") if i % 2 == 0 else ("floor", "tidings")
                for side in order:
                    if side == "floor" and p.floor is None:
                        continue
                    run = tidings if side == "tidings" else floor
                    started = time.perf_counter()
                    run(q, p, who)
                    elapsed = (time.perf_counter() - started) * 1000
                    q.samples.setdefault(f"{who}/{side}", []).append(elapsed)
                    if side == "tidings":
                        q.by_value.setdefault((index, who), []).append(elapsed)
                    calls += 1
        if args.progress and (i + 1) % max(1, args.runs // 10) == 0:
            print(f"  {i + 1}/{args.runs} rounds of calls ...", flush=True)
    wall = time.perf_counter() - wall0
    own = time.process_time() - cpu0
    others = max(0.0, _machine_busy() - busy0 - own)
    store.close()
    raw.close()
    return {
        "store": raw.name,
        "queries": [
            {
                "name": q.name,
                "group": q.group,
                "values": [
                    {"q": p.q, "cursor": p.cursor, "floor": p.floor is not None} for p in q.params
                ],
                "rows": {who: rows.get(f"{q.name}|{who}", []) for who in viewers},
                "stats": {k: _stats(v) for k, v in q.samples.items()},
                "by_value": [
                    {"q": q.params[index].q, "viewer": who, **_stats(v)}
                    for (index, who), v in sorted(q.by_value.items())
                ],
                "samples": q.samples,
            }
            for q in queries
        ],
        "mismatches": mismatches,
        "plans": plans,
        "calls": calls,
        "wall_s": wall,
        "cpu_s": own,
        "other_cores": others / wall if wall else 0.0,
        "member_sources": len(member),
        "member_events": sum(c for s, _, c in meta["sources"] if s in member),
    }


# --- reporting ----------------------------------------------------------------------


VERDICTS = (
    ("page", "Filtered history pages", TARGET_PAGE_P95_MS),
    ("text", "Full text, history order", TARGET_TEXT_P95_MS),
    ("ranked", "Full text, ranked (search_events)", None),
    ("common word, ranked", "Full text, ranked, a common word", TARGET_RANKED_P95_MS),
    ("edge", "Edge cases (not in the verdict)", None),
)


def verdicts(result: Result) -> list[Result]:
    """Per group of queries (or one query, by name): the p95 over every call
    (both viewers) and the worst single query's p95, against the target."""
    out = []
    for group, label, target in VERDICTS:
        qs = [q for q in result["queries"] if group in (q["group"], q["name"])]
        if not qs:
            continue
        pooled = [
            x for q in qs for k, v in q["samples"].items() if k.endswith("/tidings") for x in v
        ]
        worst = max(
            ((q["name"], k.split("/")[0], s["p95"]) for q in qs for k, s in q["stats"].items()
             if k.endswith("/tidings")),
            key=lambda x: x[2],
        )  # fmt: skip
        p95 = _percentile(pooled, 0.95)
        out.append({
            "group": group, "label": label, "target": target, "calls": len(pooled),
            "queries": len(qs), "p50": statistics.median(pooled), "p95": p95,
            "worst": worst, "met": None if target is None else p95 <= target,
        })  # fmt: skip
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_report(meta: Result, result: Result, args: argparse.Namespace) -> None:
    n = meta["events"]
    print()
    print(
        f"History and full-text search: {n:,} events in {result['store']} "
        f"({meta['bytes'] / 1e9:.2f} GB), "
        f"{len(meta['sources'])} sources; member sees {result['member_sources']} of them "
        f"({result['member_events'] / n:.0%} of the events)"
    )
    print(
        f"{args.runs} calls per query and viewer (ranked: {-(-args.runs // args.ranked_every)}, "
        f"edge cases: {-(-args.runs // args.edge_every)}), each value in turn; "
        f"page = {PAGE} events (limit={PAGE + 1}); times in ms"
    )
    header = (
        f"{'query':34} {'viewer':7} {'p50':>6} {'p95':>6} {'max':>6} "
        f"{'floor p50':>9} {'floor p95':>9} {'p50 ratio':>9}"
    )
    group_titles = {
        "reference": "Reference (unfiltered)",
        "page": f"Filtered history pages: latest_events (target p95 <= {TARGET_PAGE_P95_MS:g} ms)",
        "text": (
            f"Full text, history order: latest_events (target p95 <= {TARGET_TEXT_P95_MS:g} ms)"
        ),
        "ranked": (
            f"Full text, ranked: search_events (target p95 <= {TARGET_RANKED_P95_MS:g} ms "
            "for the common word only)"
        ),
        "edge": "Edge cases: a filter that selects very few events or none (not in the verdict)",
    }
    last = None
    for q in result["queries"]:
        if q["group"] != last:
            last = q["group"]
            print(f"\n{group_titles[last]}")
            print(header)
        for who in ("admin", "member"):
            t = q["stats"].get(f"{who}/tidings", {})
            f = q["stats"].get(f"{who}/floor", {})
            ratio = f"{t['p50'] / f['p50']:.1f}x" if t and f and f["p50"] else ""
            print(
                f"{q['name'][:34]:34} {who:7} {_ms(t.get('p50')):>6} {_ms(t.get('p95')):>6} "
                f"{_ms(t.get('max')):>6} {_ms(f.get('p50')):>9} {_ms(f.get('p95')):>9} {ratio:>9}"
            )
    print("\nValues each query cycles through (share of all events they select):")
    for q in result["queries"]:
        if q["group"] == "ranked":
            continue
        values = ", ".join(f"{v['q'] or '(empty)'} {_share(meta, v['q'])}" for v in q["values"])
        print(f"  {q['name']}: {values}")
    slow = sorted(
        (
            (v["p95"], q["name"], v)
            for q in result["queries"]
            if q["group"] in ("page", "text")
            for v in q["by_value"]
        ),
        key=lambda x: -x[0],
    )[:6]
    print("\nSlowest single values of the verdict's queries (Tidings):")
    for _, name, v in slow:
        print(
            f"  {name}: {v['q']} as {v['viewer']}: p50 {_ms(v['p50'])}, p95 {_ms(v['p95'])}, "
            f"max {_ms(v['max'])} ms ({v['n']} calls)"
        )
    if result["mismatches"]:
        print("\nWARNING: Tidings and the floor selected different events:")
        for m in result["mismatches"]:
            print(f"  {m}")
    else:
        print("\nTidings and the floor selected the same events for every value and viewer.")
    if result["plans"]:
        print("\nQuery plans (first value of each query):")
        for line in result["plans"]:
            print(f"  {line}")
    cores = os.cpu_count() or 1
    print(
        f"\n{result['calls']:,} calls in {result['wall_s']:.0f} s; this process used "
        f"{result['cpu_s'] / result['wall_s']:.2f} cores, other processes "
        f"{result['other_cores']:.2f} of {cores}"
    )
    if result["other_cores"] > 0.25 * cores:
        print("WARNING: other processes kept the machine busy: the figures are noisy")
    print()
    for v in result["verdicts"]:
        name, who, worst = v["worst"]
        line = (
            f"{v['label']} ({v['queries']} quer{'y' if v['queries'] == 1 else 'ies'} x 2 "
            f"viewers, {v['calls']:,} calls): "
            f"p50 {_ms(v['p50'])} ms, p95 {_ms(v['p95'])} ms"
        )
        if v["target"] is not None:
            if v["met"]:
                verdict = "met"
            else:
                verdict = (
                    f"MISSED by {v['p95'] - v['target']:.0f} ms ({v['p95'] / v['target']:.1f}x)"
                )
            line += f" -> target {v['target']:g} ms: {verdict}"
        print(line)
        above = "" if v["target"] is None or worst <= v["target"] else " (above the target)"
        print(f"  slowest query: {name} as {who}, p95 {_ms(worst)} ms{above}")


def _share(meta: Result, q: str) -> str:
    """A value's share of the events, from the generator's counts (admin's view)."""
    n = meta["events"]
    count = None
    field_, _, value = q.partition(":")
    lookups = {
        "source": {s: c for s, _, c in meta["sources"]},
        "tag": dict(meta["tags"]),
        "author": dict(meta["authors"]),
    }
    if field_ in lookups and "," not in value and " " not in value.strip('"'):
        count = lookups[field_].get(value.strip('"'))
    elif field_ == "author":
        count = lookups["author"].get(value.strip('"'))
    elif field_ == "kind":
        count = dict(meta["kind_verb"]).get(f"{value.split()[0]} {q.split('verb:')[-1]}")
    elif ":" not in q and q:
        count = dict(meta["words"]).get(q) or dict(meta["phrases"]).get(q.strip('"'))
    return f"({count / n:.2%})" if count else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200, help="calls per query and viewer")
    parser.add_argument(
        "--ranked-every", type=int, default=4, help="ranked queries run every Nth round only"
    )
    parser.add_argument(
        "--edge-every", type=int, default=10, help="edge cases run every Nth round only"
    )
    parser.add_argument("--no-ranked", action="store_true", help="skip the ranked queries")
    parser.add_argument("--fresh", action="store_true", help="regenerate the cached database")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS, help="SQLite's databases")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-server",
        default=PG_SERVER,
        help="PostgreSQL: the server (the bench makes its own database there)",
    )
    parser.add_argument("--explain", action="store_true", help="print every query plan")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--progress", action="store_true", help="report progress while measuring")
    parser.add_argument(
        "--peer",
        choices=("reader", "none"),
        help="also time the peer on its own, smaller data set (bench/history_reader.py); "
        "default: reader with --store sqlite",
    )
    parser.add_argument("--peer-events", type=int, default=100_000, help="the peer's data set")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.store == "postgresql":
        from bench import history_pg  # psycopg: an optional extra

        libraries = (
            f"PostgreSQL {history_pg.server_version(args.pg_server)}, "
            f"psycopg {package_version('psycopg')}, SQLAlchemy {package_version('sqlalchemy')}"
        )
        print(environment(libraries), flush=True)
        name = history_pg.database_name(args.events)
        if args.fresh or history_pg.stored_meta(args.pg_server, name) is None:
            print(f"generating {args.events:,} events into database {name} ...", flush=True)
        url, meta = history_pg.build_database(args.events, args.pg_server, fresh=args.fresh)
        where = f"database {name}"
    else:
        libraries = f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {package_version('sqlalchemy')}"
        print(environment(libraries), flush=True)
        db, _ = cached_paths(args.events, args.cache_dir)
        if args.fresh or not db.exists():
            print(f"generating {args.events:,} events into {db} ...", flush=True)
        db, meta = build_database(args.events, args.cache_dir, fresh=args.fresh)
        url, where = f"sqlite:///{db}", str(db)
    print(
        f"database: {where} ({meta['bytes'] / 1e6:,.0f} MB, generated in {meta['seconds']:.0f} s)",
        flush=True,
    )
    result = measure(url, meta, args)
    result["verdicts"] = verdicts(result)
    print_report(meta, result, args)
    if (args.peer or ("reader" if args.store == "sqlite" else "none")) == "reader":
        from bench import history_reader  # reader: a bench extra

        result["peer"] = history_reader.compare(
            events=args.peer_events, runs=args.runs, cache_dir=args.cache_dir, fresh=args.fresh
        )
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"meta": {k: meta[k] for k in meta if k not in ("words",)}, "result": result},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
