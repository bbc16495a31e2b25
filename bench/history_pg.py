"""bench.history on PostgreSQL: the database made by COPY, and the floor through psycopg.

    python -m bench.history --store postgresql --events 10000000   # issue 13
    python -m bench.history --store postgresql --events 200000 --runs 40   # a quick look
    python -m bench.history --store postgresql --pg-server postgresql+psycopg://u@host/postgres

The database is named by the event count, the generator's version and the
schema's head (`tidings_bench_history_<n>_g<version>_s<head>`) and kept on the
server between runs, as the SQLite file is under bench/results/ (`--fresh`
drops it). `Store(url)` makes it (the real schema: every migration), then the
rows `generate_rows` makes for SQLite, the same ones, go in by COPY: the
events, and in `event_search` each one's tsvector, built by
`search_postgres.document` as `Store._append` has it built. The two tables'
foreign keys and secondary indexes (the GIN index among them) are dropped for
the load and made again after it, from their own definitions: a GIN index
built in one go is many times faster than one updated row by row. Then
VACUUM ANALYZE, as autovacuum would do in time.

What the database holds (the counts the queries are chosen by) is kept in it,
in a table of the bench's own, `bench_history_meta`: the database is the whole
cache. It is built under the name `<name>_building` and renamed when whole.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from collections import deque
from multiprocessing.pool import AsyncResult
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from aggregator.notify import libpq_url
from aggregator.search_postgres import document, query
from bench.history import (
    COLUMNS,
    GENERATOR_VERSION,
    PG_SERVER,
    FloorSql,
    Result,
    Tally,
    _schema_head,
    _vocabulary,
    add_sources,
    generate_rows,
    phrases_of,
)

ESTIMATE_FOR = 10_000_000  # the size: every generation says how long it would take
_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))  # making tsvectors while this process COPYs


def _tsquery(words: str, weights: str = "ACB") -> str:
    """The tsquery of a word or a phrase (lower-case words here: they are
    Tidings' tokens as they are), in the lexemes of `weights`: the columns.
    A phrase is one in each column, never across two."""
    tokens = words.lower().split()
    if len(tokens) == 1:
        return f"'{tokens[0]}':{weights}"
    each = (" <-> ".join(f"'{t}':{w}" for t in tokens) for w in weights)
    return "(" + " | ".join(f"({p})" for p in each) + ")"


# By hand, the tsquery the store writes: ts_rank scores `'a' <-> 'b'` otherwise
# than the same phrase per column (the events found are the same), and ranking
# uses the store's weights (search_postgres.RANK_WEIGHTS, for D, C, B, A: the
# author 2, the summary 1, the title 4, over 4).
POSTGRES_FLOOR = FloorSql(
    fold='lower({} COLLATE "C")',  # the C locale's lower() folds ASCII letters only
    matches="id IN (SELECT event_id FROM event_search WHERE doc @@ CAST(? AS tsquery))",
    # As Tidings ranks (aggregator.store.RANK_WITHIN): the newest 20,000 matches.
    ranked=(
        "SELECT events.* FROM (SELECT event_search.event_id AS id, "
        "ts_rank('{0, 0.5, 0.25, 1}', event_search.doc, q) AS score "
        "FROM CAST(? AS tsquery) AS q, event_search "
        "{join:JOIN events ON events.id = event_search.event_id }WHERE event_search.doc @@ q "
        "{viewer}ORDER BY event_search.event_id DESC LIMIT 20000) AS ranked "
        "JOIN events ON events.id = ranked.id ORDER BY ranked.score DESC, events.id DESC "
        "LIMIT ?"
    ),
    text=_tsquery,
    author=lambda name: _tsquery(name, "C"),
    moment=lambda moment: moment,
)


class PostgresFloor:
    """The floor on PostgreSQL: psycopg on the store's database, rows as tuples."""

    name = "PostgreSQL"
    sql = POSTGRES_FLOOR

    def __init__(self, url: str) -> None:
        # Never prepared: each statement planned for its values, as Tidings' are
        # (the pool's ROLLBACK after every read makes psycopg drop its prepared
        # statements) and as EXPLAIN shows them. After five runs psycopg would
        # prepare, and PostgreSQL could then switch to one generic plan for
        # every value: faster for some (a `kind:` page), slower for others.
        self.conn = psycopg.connect(libpq_url(url), autocommit=True, prepare_threshold=None)

    def rows(self, sql: str, values: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(_marks(sql), values).fetchall()

    def plan(self, sql: str, values: Any) -> list[str]:
        found = self.conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + _marks(sql), values)
        return [line for (line,) in found]

    def close(self) -> None:
        self.conn.close()


def _marks(sql: str) -> str:
    """psycopg's placeholders for the floor's `?` (Tidings' statements have none)."""
    return sql.replace("?", "%s")


def database_name(events: int) -> str:
    return f"tidings_bench_history_{events}_g{GENERATOR_VERSION}_s{_schema_head()}"


def database_url(server: str, database: str) -> str:
    return make_url(server).set(database=database).render_as_string(hide_password=False)


def server_version(server: str) -> str:
    with psycopg.connect(libpq_url(server)) as conn:
        return str(_scalar(conn, "SHOW server_version"))


def _scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def _admin(server: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run `sql` on the server's own database (outside a transaction); its rows."""
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def stored_meta(server: str, database: str) -> Result | None:
    """What a whole database holds, or None when it is missing or was never finished."""
    if not _admin(server, "SELECT 1 FROM pg_database WHERE datname = %s", (database,)):
        return None
    with psycopg.connect(libpq_url(database_url(server, database))) as conn:
        if conn.execute("SELECT to_regclass('bench_history_meta')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT meta FROM bench_history_meta").fetchone()
    return None if row is None else dict(row[0])


def drop_database(server: str, database: str) -> None:
    """Drop `database` and its unfinished build, if there are any."""
    for name in (database, f"{database}_building"):
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_database(
    events: int, server: str = PG_SERVER, *, fresh: bool = False, name: str | None = None
) -> tuple[str, Result]:
    """The URL of the database of `events` events on `server` and what it
    holds (generated when missing or when `fresh`). `name` replaces the
    database's usual name (tests)."""
    database = name or database_name(events)
    if not fresh and (kept := stored_meta(server, database)) is not None:
        return database_url(server, database), kept
    drop_database(server, database)
    building = f"{database}_building"
    _admin(server, f'CREATE DATABASE "{building}"')
    started = time.perf_counter()
    add_sources(database_url(server, building))  # the real schema: every migration
    timings: dict[str, float] = {}
    with psycopg.connect(libpq_url(database_url(server, building)), autocommit=True) as conn:
        # A bench fixture: a crash loses the database, never a commit someone relies on.
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")  # the GIN build sorts in memory
        conn.execute("SET work_mem = '256MB'")  # the foreign keys' checks: one join each
        dropped = _drop_constraints(conn)
        tally = Tally(events)
        _load(conn, events, tally)
        timings["load_seconds"] = time.perf_counter() - tally.started
        mark = time.perf_counter()
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'id'), %s, %s)",
            (max(events, 1), events > 0),
        )
        for sql in dropped:
            conn.execute(sql)
        timings["index_seconds"] = time.perf_counter() - mark
        mark = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) events, event_search, sources")
        timings["vacuum_seconds"] = time.perf_counter() - mark
        mark = time.perf_counter()
        words = _document_frequencies(conn)
        phrase_df = {
            p: _scalar(
                conn,
                "SELECT count(*) FROM event_search WHERE doc @@ CAST(%s AS tsquery)",
                (query([tuple(p.split())]),),
            )
            for p in phrases_of(_vocabulary(random.Random(1)))
        }
        timings["count_seconds"] = time.perf_counter() - mark
        meta: Result = {
            **tally.meta(),
            "seconds": time.perf_counter() - started,
            "insert_seconds": timings["load_seconds"],
            **timings,
            "bytes": _scalar(conn, "SELECT pg_database_size(current_database())"),
            "words": words,
            "phrases": sorted(phrase_df.items(), key=lambda x: -x[1]),
        }
        conn.execute("CREATE TABLE bench_history_meta (meta jsonb NOT NULL)")
        conn.execute("INSERT INTO bench_history_meta VALUES (%s)", (json.dumps(meta),))
    _admin(server, f'ALTER DATABASE "{building}" RENAME TO "{database}"')
    print_estimate(meta)
    return database_url(server, database), meta


def _drop_constraints(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the foreign keys and the indexes but the primary keys of `events`
    and `event_search`; the statements that make them again, in order."""
    tables = "('events'::regclass, 'event_search'::regclass)"
    foreign = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE contype = 'f' AND conrelid IN {tables} ORDER BY conname"
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        f"WHERE i.indrelid IN {tables} AND NOT i.indisprimary ORDER BY 1"
    ).fetchall()
    for table, constraint, _ in foreign:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
    for index, _ in indexes:
        conn.execute(f"DROP INDEX {index}")
    return [definition for _, definition in indexes] + [
        f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {definition}'
        for table, constraint, definition in foreign
    ]


def _load(conn: psycopg.Connection[Any], events: int, tally: Tally) -> None:
    """COPY the generated events, numbered from 1 as SQLite numbers them, and
    their tsvectors, one transaction per batch. The tsvectors (two thirds of
    the Python time) are made by other processes meanwhile."""
    title, summary, author = (COLUMNS.index(c) for c in ("title", "summary", "actor_name"))
    pending: deque[tuple[int, list[tuple[Any, ...]], AsyncResult[list[str]]]] = deque()
    first = 1
    # Forked: the workers need nothing but `document`, and a fork imports nothing
    # again (spawn would run an unguarded caller's script once more in each).
    with multiprocessing.get_context("fork").Pool(_WORKERS) as pool:
        for rows in generate_rows(events):
            texts = [(r[title], r[summary], r[author] or "") for r in rows]
            pending.append((first, rows, pool.starmap_async(document, texts, chunksize=1000)))
            first += len(rows)
            if len(pending) > _WORKERS:
                _copy(conn, *pending.popleft(), tally)
        while pending:
            _copy(conn, *pending.popleft(), tally)


def _copy(
    conn: psycopg.Connection[Any],
    first: int,
    rows: list[tuple[Any, ...]],
    documents: AsyncResult[list[str]],
    tally: Tally,
) -> None:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY events (id, {', '.join(COLUMNS)}) FROM STDIN") as copy:
            for number, row in enumerate(rows, first):
                copy.write_row((number, *row))
        with cur.copy("COPY event_search (event_id, doc) FROM STDIN") as copy:
            for number, doc in enumerate(documents.get(), first):
                copy.write_row((number, doc))
    tally.add(rows)


def _document_frequencies(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """Every indexed word and the number of events it is in, most common first."""
    rows = conn.execute(
        "SELECT word, ndoc FROM ts_stat('SELECT doc FROM event_search') "
        'ORDER BY ndoc DESC, word COLLATE "C"'
    ).fetchall()
    return [(w, d) for w, d in rows if w.isalpha()]


def print_estimate(meta: Result) -> None:
    """How long the generation took, step by step, and would take for the
    issue's 10,000,000 events (each step in proportion to the events)."""
    n = meta["events"]
    scale = ESTIMATE_FOR / max(n, 1)
    steps = {
        "COPY": meta["load_seconds"],
        "indexes and foreign keys": meta["index_seconds"],
        "VACUUM ANALYZE": meta["vacuum_seconds"],
        "word counts": meta["count_seconds"],
    }
    print(
        f"generated {n:,} events in {meta['seconds']:.0f} s "
        f"({n / max(meta['load_seconds'], 1e-9):,.0f} events/s by COPY): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()),
        flush=True,
    )
    if n < ESTIMATE_FOR:
        total = sum(steps.values()) * scale
        print(
            f"  {ESTIMATE_FOR:,} events would take about {total / 60:.0f} min "
            f"(each step x{scale:g}: "
            + ", ".join(f"{k} {v * scale / 60:.1f} min" for k, v in steps.items())
            + ")",
            flush=True,
        )
