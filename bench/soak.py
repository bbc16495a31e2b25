"""Soak: web workers and pollers on one store for half an hour (issue 13).

    python -m bench.soak                                   # the issue's run: 30 minutes
    python -m bench.soak --sources 300 --conns 200 --minutes 2 --interval 10s
                                                           # a quick look
    python -m bench.soak --store sqlite --workers 1 --pollers 1

What runs, each in its own process, all on 127.0.0.1:

- a feed server: `--sources` generated RSS feeds (bench.feedgen's, `--items`
  each, strong ETags, 304 to a matching If-None-Match). Once the run starts,
  `--new-per-minute` new items appear across them, evenly spaced in time, each
  in a feed chosen by a generator seeded with `--seed`: the same items in the
  same feeds on every run. It notes the time each one became servable.
- `--pollers` `tidings poller` processes (each with its parser processes) and
  `--workers` `tidings serve --no-poller` processes on one fresh store: a
  database made for the run on `--pg-server` and dropped after it, or a SQLite
  file. Every source is polled every `--interval`.
- a commit watcher: on PostgreSQL it LISTENs on tidings_events, which every
  transaction that adds events NOTIFYs with its newest id at commit, and notes
  when it hears each; on SQLite it looks at the newest id every 10 ms. Writers
  hold one lock (the store's), so ids become visible in id order: an event's
  commit time is when the first announcement of an id at least as high was
  heard.
- `--conns` websocket clients in `--client-procs` processes (bench.live's
  sans-I/O clients, which note the arrival time of every event), each with its
  own API token of one of `--users` members of the sources' audience, each
  subscribed to everything (empty query, cursor null); connection i is on
  worker i mod `--workers`.

The pollers first poll every source once (the items already there become
events before any client connects); then the clients connect and the clock
starts: items appear for `--minutes`, and the run goes on until every one of
them is stored (at most about one interval later) and a few seconds more.

Figures: deliveries expected (events committed after the clients subscribed,
times clients connected) against received, missing and duplicates; latency
commit -> screen (arrival minus the commit time the watcher heard: what the
issue's p99 is about), overall and per 5-minute window of commit time;
appear -> commit and appear -> screen (from the item's appearance upstream, so
they include the wait for the next poll); poll errors (the pollers' logs and
the store's sources table) and every warning or error the processes logged;
websocket closes and the streams still open at the end (each worker's
/metrics); RSS of every Tidings process every `--sample` seconds (shared
pages count in each), with the first sample after `--warmup`, the last, the
peak and a least-squares slope, flagged at GROWTH_MB_PER_HOUR or more; CPU of
each process. `--json` writes all of it, RSS series included; `--logs` keeps
the processes' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any, TextIO

from bench import live
from bench.feedgen import (
    _NAMES,
    _WORDS,
    ITEMS,
    SEED,
    _Counters,
    _description,
    _Http,
    _Site,
    fetch_stats,
    parse_items,
    publish,
    render_feed,
)
from bench.feeds import _proc_stat, environment, package_version

GROWTH_MB_PER_HOUR = 10.0  # RSS slope flagged as growth: 240 MB more after a day
MIN_TREND_SPAN = 600.0  # seconds of samples below which a slope says little
WINDOW = 300.0  # latency is also given per window of this many seconds of commit time
KEEP_NEW = 25  # new items a feed lists at most, newest first, as real feeds cut theirs
WATCH_EVERY = 0.01  # seconds between the SQLite watcher's looks
SETTLE = 3.0  # seconds after the last item is stored, for its deliveries
GUID_PREFIX = "tag:soak.example.org,2026:"
SUBSCRIBERS = "tidings_websocket_subscribers"  # a worker's open streams (/metrics)
DROPPED = "tidings_websocket_slow_clients_dropped_total"
Result = dict[str, Any]


# --- the feeds: generated on loopback, new items appearing over time ------------


@dataclass(frozen=True, slots=True)
class NewItem:
    """Item `k` of the run: it appears `offset` seconds after the start, in `feed`."""

    k: int
    feed: int
    offset: float

    @property
    def guid(self) -> str:
        return f"{GUID_PREFIX}{self.feed}/new{self.k}"


def schedule(feeds: int, per_minute: float, seconds: float, seed: str = SEED) -> list[NewItem]:
    """Every item that appears in a run of `seconds`: evenly spaced in time,
    each in a feed drawn from a generator seeded with `seed`."""
    rng = random.Random(f"{seed}:soak")
    gap = 60.0 / per_minute
    return [NewItem(k, rng.randrange(feeds), k * gap) for k in range(round(seconds / gap))]


def new_item_xml(item: NewItem, when: datetime, seed: str = SEED) -> bytes:
    """The <item> element of `item`, published at `when`: like bench.feedgen's."""
    rng = random.Random(f"{seed}:new:{item.k}")
    name = rng.choice(_NAMES)
    title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 10))).capitalize()
    return (
        f'<item><guid isPermaLink="false">{item.guid}</guid><title>{escape(title)}</title>'
        f"<link>https://news{item.feed % 7}.example.org/feed{item.feed}/new{item.k}.html</link>"
        f"<pubDate>{format_datetime(when, usegmt=True)}</pubDate>"
        f"<author>{name.split()[0].lower()}@example.org ({escape(name)})</author>"
        f"<description><![CDATA[{_description(rng, item.feed, item.k)}]]></description>"
        "</item>\n"
    ).encode()


def _feeds_main(args: argparse.Namespace) -> int:
    """The feed server: prints its port, waits for "go" on stdin, then makes
    the scheduled items appear, writing `k feed time` per item to `--out` as it
    goes (line-buffered: the bench reads progress from it)."""
    plan = schedule(args.sources, args.new_per_minute, args.minutes * 60, args.seed)
    bases = [render_feed(i, args.seed, args.items) for i in range(args.sources)]
    site = _Site({}, {}, {})
    for i, body in enumerate(bases):
        publish(site, i, body)
    fresh: dict[int, list[bytes]] = {}  # feed -> its new items, newest first
    counters = _Counters()

    async def run(out: TextIO) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Http(site, counters), "127.0.0.1", 0, backlog=1024
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        start = loop.time()
        for item in plan:
            await asyncio.sleep(max(0.0, start + item.offset - loop.time()))
            listed = fresh.setdefault(item.feed, [])
            listed.insert(0, new_item_xml(item, datetime.now(UTC), args.seed))
            del listed[KEEP_NEW:]
            base = bases[item.feed]
            first = base.index(b"<item>")  # new items go above the old ones
            publish(site, item.feed, base[:first] + b"".join(listed) + base[first:])
            out.write(f"{item.k} {item.feed} {time.time():.6f}\n")
        await server.serve_forever()  # until the bench ends it

    with open(args.out, "a", buffering=1) as out:
        asyncio.run(run(out))
    return 0


def read_appeared(path: Path) -> dict[int, float]:
    """Item k -> when it appeared, from the feed server's notes."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        k, _, t = line.split()
        out[int(k)] = float(t)
    return out


# --- the commit watcher ----------------------------------------------------------


def _watcher_main(args: argparse.Namespace) -> int:
    """Writes `newest id, time` each time new events are committed (see the
    module docstring): prints "ready" once it is listening or looking."""
    from sqlalchemy.engine import make_url

    with open(args.out, "a", buffering=1) as out:
        url = make_url(args.store_url)
        if url.get_backend_name() == "sqlite":
            import sqlite3

            db = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
            print("ready", flush=True)
            newest = 0
            while True:
                found = db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
                if found > newest:
                    newest = found
                    out.write(f"{newest} {time.time():.6f}\n")
                time.sleep(WATCH_EVERY)
        import psycopg

        from aggregator.notify import libpq_url
        from aggregator.store import EVENTS_CHANNEL

        with psycopg.connect(libpq_url(args.store_url), autocommit=True) as conn:
            conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            print("ready", flush=True)
            for note in conn.notifies():
                if note.payload.isdigit():
                    out.write(f"{note.payload} {time.time():.6f}\n")
    return 0


def read_commits(path: Path) -> list[tuple[int, float]]:
    """The watcher's notes, in the order heard: (newest id, time)."""
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines())
    return [(int(i), float(t)) for i, t in rows]


def commit_times(notes: Sequence[tuple[int, float]], ids: Sequence[int]) -> dict[int, float]:
    """Event id -> when the first announcement of an id at least as high was
    heard: its commit, since ids become visible in id order. Ids announced by
    no note (the watcher missed them) are left out."""
    out: dict[int, float] = {}
    pending = sorted(ids)
    j = 0
    for newest, t in notes:
        while j < len(pending) and pending[j] <= newest:
            out[pending[j]] = t
            j += 1
    return out


# --- the clients: bench.live's, each subscribing to everything -------------------


def _clients_main(args: argparse.Namespace) -> int:
    """bench.live's client process, with an empty query for every client."""
    # Its clients take their query from this module-level function; the issue's
    # clients want everything.
    live.query_for = lambda index: ""
    tokens = json.loads(Path(args.tokens).read_text())
    return asyncio.run(live._clients_main(args, tokens))


# --- the store, its configuration and accounts -----------------------------------


@dataclass
class Setup:
    """What a run is made of, for its clean-up: the store and who may read it."""

    store_url: str
    pg_server: str | None  # where the run's database lives; None on SQLite
    config: Path
    tokens: Path  # one API token per client, a JSON list
    admin_token: str  # for the workers' /metrics


def make_store(args: argparse.Namespace, directory: Path) -> tuple[str, str | None]:
    """A fresh store for the run: its URL, and the server it lives on (PostgreSQL)."""
    if args.store == "sqlite":
        return f"sqlite:///{directory}/tidings.db", None
    name = f"tidings_bench_soak_{secrets.token_hex(3)}"
    return live._pg_database(args.pg_server, name), args.pg_server


def drop_store(store_url: str, pg_server: str | None) -> None:
    if pg_server is not None:
        live.drop_store(live.Template(Path(), store_url, pg_server), store_url)


def write_config(
    directory: Path, store_url: str, feeds_port: int, sources: int, interval: str
) -> Path:
    path = directory / "config.toml"
    base = f"http://127.0.0.1:{feeds_port}/feed"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\n[store]\nurl = {json.dumps(store_url)}\n'
        + "".join(
            f'\n[[sources]]\nid = "feed{i:05d}"\nkind = "feed"\nurl = "{base}/{i}.xml"\n'
            f'interval = "{interval}"\naudience = ["staff"]\n'
            for i in range(sources)
        )
    )
    return path


def make_accounts(config_path: Path, conns: int, users: int) -> tuple[list[str], str]:
    """The sources in the store, `users` members of their audience with one API
    token per client, and an admin's token (for /metrics)."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from aggregator.config import load_config
    from aggregator.store import Store

    config = load_config(config_path)
    store = Store(config.store_url)
    try:
        now = datetime.now(UTC)
        store.sync_sources(config.sources, now, config_file=str(config.path))
        people = store.people
        names = [f"soak{u:04d}" for u in range(max(1, min(users, conns)))]
        for name in names:
            people.create_user(name, password_hash=None, groups=["staff"], actor="bench", now=now)
        tokens = [
            people.create_token(names[i % len(names)], f"c{i}", actor="bench", now=now)
            for i in range(conns)
        ]
        people.create_user("soakadmin", password_hash=None, admin=True, actor="bench", now=now)
        return tokens, people.create_token("soakadmin", "metrics", actor="bench", now=now)
    finally:
        store.close()


class StoreReader:
    """The bench's own reads of the store: progress, the run's events, health."""

    def __init__(self, store_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # No pool: no connection of the bench's stays open in the database.
        self.engine = create_engine(store_url, poolclass=NullPool)

    def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def newest_id(self) -> int:
        return int(self.scalar("SELECT coalesce(max(id), 0) FROM events"))

    def unpolled(self) -> int:
        sql = "SELECT count(*) FROM sources WHERE kind = 'feed' AND last_poll_at IS NULL"
        return int(self.scalar(sql))

    def new_items_stored(self) -> int:
        sql = "SELECT count(*) FROM entries WHERE external_id LIKE :p"
        return int(self.scalar(sql, p=GUID_PREFIX + "%"))

    def events_after(self, first: int) -> list[tuple[int, str]]:
        """(id, external id) of every event above `first`, by id."""
        rows = self.rows("SELECT id, external_id FROM events WHERE id > :i ORDER BY id", i=first)
        return [(int(i), x) for i, x in rows]

    def health(self, since: datetime) -> Result:
        """Poll failures as the sources table keeps them."""
        rows = self.rows(
            "SELECT id, last_error, last_error_at, consecutive_failures FROM sources "
            "WHERE kind = 'feed' AND (consecutive_failures > 0 OR last_error_at IS NOT NULL)"
        )
        recent = [r for r in rows if r[2] is not None and _aware(r[2]) >= since]
        return {
            "sources_failed_during_run": len(recent),
            "sources_failing_at_end": sum(1 for r in rows if r[3] > 0),
            "consecutive_failures_at_end": sum(int(r[3]) for r in rows),
            "error_examples": [f"{r[0]}: {r[1]}" for r in recent[:5]],
        }

    def close(self) -> None:
        self.engine.dispose()


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- the processes: who they are, their memory and CPU ---------------------------


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def family(roots: Mapping[str, int]) -> dict[int, str]:
    """Every process of each named root, by pid: the root itself, and below it
    a poller's parser processes (children of its forkserver), the forkserver
    and the resource tracker multiprocessing starts."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: dict[int, str] = {}
    for name, root in roots.items():
        out[root] = name
        parsers = itertools.count(1)
        todo = [(c, 1) for c in sorted(children.get(root, ()))]
        while todo:
            pid, depth = todo.pop(0)
            cmd = _cmdline(pid)
            if b"resource_tracker" in cmd:
                kind = "resource tracker"
            elif depth == 1 and b"forkserver" in cmd:
                kind = "forkserver"
            elif depth == 2 and b"forkserver" in cmd:
                kind = f"parser {next(parsers)}"
            else:
                kind = f"child {pid}"
            out[pid] = f"{name} {kind}"
            todo += [(c, depth + 1) for c in sorted(children.get(pid, ()))]
    return out


@dataclass
class Series:
    """One process's RSS over the run: (seconds since the start, MB)."""

    name: str
    pid: int
    tidings: bool  # a Tidings process (judged for growth) or the bench's own
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} (pid {self.pid})"


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def trend(points: Sequence[tuple[float, float]], warmup: float) -> Result:
    """RSS figures from the first sample at or after `warmup` seconds on."""
    after = [p for p in points if p[0] >= warmup] or list(points[-1:])
    if not after:
        return {"samples": 0}
    span = after[-1][0] - after[0][0]
    per_hour = slope(after) * 3600
    verdict = (
        "short" if span < MIN_TREND_SPAN
        else "GROWING" if per_hour >= GROWTH_MB_PER_HOUR
        else "flat"
    )  # fmt: skip
    return {
        "samples": len(after),
        "span_s": span,
        "first_mb": after[0][1],
        "last_mb": after[-1][1],
        "max_mb": max(v for _, v in after),
        "slope_mb_per_h": per_hour,
        "verdict": verdict,
    }


def total_series(series: Sequence[Series]) -> list[tuple[float, float]]:
    """The sum of several processes' RSS at each sampling time."""
    sums: dict[float, float] = {}
    for s in series:
        for t, v in s.points:
            sums[t] = sums.get(t, 0.0) + v
    return sorted(sums.items())


# --- the run ----------------------------------------------------------------------


def interval_seconds(args: argparse.Namespace) -> float:
    from aggregator.durations import parse_duration

    return parse_duration(args.interval)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "TIDINGS_DISABLE_PLUGINS": "1",
        # The code next to this file, whatever is installed.
        "PYTHONPATH": os.pathsep.join([str(live.ROOT), *filter(None, sys.path)]),
    }


def _soak(role: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.soak", "--role", role, *extra]


def _tidings(config: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "aggregator.cli", "--log-level", "WARNING", command[0],
            "--config", str(config), *command[1:]]  # fmt: skip


def _metrics(port: int, token: str) -> dict[str, float]:
    """A worker's own counters (each worker has its own registry)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("tidings_websocket"):
            out[name] = float(value)
    return out


# Tidings' log format ("date time LEVEL logger: message"), and uvicorn's own
# ("LEVEL:    message"), which it sets up for its loggers.
_LOG_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+): (.*)")
_UVICORN_LEVEL = re.compile(r"^(WARNING|ERROR|CRITICAL):()\s+(.*)")


def read_log(path: Path) -> Result:
    """What one process logged at WARNING or above (its log level), counted."""
    counts = {"warnings": 0, "errors": 0, "tracebacks": 0, "poll_failures": 0}
    examples: list[str] = []
    if not path.exists():
        return {**counts, "examples": examples}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            counts["tracebacks"] += 1
        match = _LOG_LEVEL.match(line) or _UVICORN_LEVEL.match(line)
        if match is None:
            continue
        level, logger, message = match.groups()
        counts["warnings" if level == "WARNING" else "errors"] += 1
        # aggregator.pipeline logs each failed poll: "source ID: why".
        counts["poll_failures"] += logger == "aggregator.pipeline" and message.startswith("source ")
        if len(examples) < 5:
            examples.append(line[:300])
    return {**counts, "examples": examples}


class Run:
    """The processes of one soak run, started in order and stopped in reverse
    by `close`, whatever happened in between."""

    def __init__(self, directory: Path, logs: Path) -> None:
        self.dir = directory
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []
        self.env = _env()

    def spawn(self, name: str, cmd: list[str], *, pipes: bool = False) -> subprocess.Popen[Any]:
        """Start a process; its output goes to LOGS/name.log unless `pipes`
        (then it talks to the bench over stdin and stdout)."""
        with (self.logs / f"{name}.log").open("wb") as log:
            proc: subprocess.Popen[Any] = subprocess.Popen(
                cmd, cwd=self.dir, env=self.env, text=True, stderr=log,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
            )  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} exited ({proc.returncode}) during the run:\n{tail}")

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            live._stop(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _readline(proc: subprocess.Popen[str], what: str, timeout: float = 300) -> str:
    """One line from a child, or SystemExit naming `what` if none comes."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise SystemExit(f"{what} did not start (exit {proc.poll()})")
    return line.strip()


def _wait(what: str, done: Callable[[], bool], timeout: float, run: Run) -> bool:
    """Wait up to `timeout` s for `done()`, checking that every process lives."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            print(f"  WARNING: {what}: still not done after {timeout:.0f} s; going on", flush=True)
            return False
        run.check_alive()
        time.sleep(1.0)
    return True


def _start_tidings(
    args: argparse.Namespace, run: Run, config: Path
) -> tuple[dict[str, int], list[int]]:
    """The pollers and the workers: their pids by name, and the workers' ports
    (once each answers)."""
    roots: dict[str, int] = {}
    for k in range(1, args.pollers + 1):
        roots[f"poller{k}"] = run.spawn(f"poller{k}", _tidings(config, "poller")).pid
    ports = [live._free_port() for _ in range(args.workers)]
    workers = []
    for k, port in enumerate(ports, 1):
        cmd = _tidings(config, "serve", "--no-poller", "--port", str(port))
        workers.append(run.spawn(f"worker{k}", cmd))
        roots[f"worker{k}"] = workers[-1].pid
    for k, (port, proc) in enumerate(zip(ports, workers, strict=True), 1):
        live._wait_healthy(port, proc, run.logs / f"worker{k}.log")
    return roots, ports


def _start_clients(
    args: argparse.Namespace, run: Run, ports: list[int]
) -> tuple[list[subprocess.Popen[str]], int]:
    """The client processes, once every connection has subscribed or failed:
    and how many failed."""
    clients = []
    per = -(-args.conns // args.client_procs)
    for k in range(args.client_procs):
        first, n = k * per, min(per, args.conns - k * per)
        if n > 0:
            clients.append(run.spawn(f"clients{k}", _soak(
                "clients", "--ports", ",".join(map(str, ports)), "--first", str(first),
                "--count", str(n), "--tokens", str(run.dir / "tokens.json"),
                "--out", str(run.dir / f"clients{k}.json"),
            ), pipes=True))  # fmt: skip
    failed = 0
    for proc in clients:
        line = _readline(proc, "a client process").split(maxsplit=3)
        if line[0] != "ready":
            raise SystemExit(f"a client process failed to start ({line})")
        failed += int(line[2])
        if int(line[2]):
            print(f"  {line[2]} connections failed: {' '.join(line[3:])}", flush=True)
    return clients, failed


def _stop_clients(run: Run, clients: list[subprocess.Popen[str]]) -> list[Result]:
    """What each client process received (it writes that when told to stop)."""
    for proc in clients:
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    results = []
    for k, proc in enumerate(clients):
        if proc.wait(120) != 0:
            raise SystemExit(f"client process {k} failed (exit {proc.returncode})")
        results.append(live._read_client_result(run.dir / f"clients{k}.json"))
    return results


class Sampler:
    """RSS of the run's processes over time: the Tidings ones (their families
    looked up again at each sample, should a pool replace a parser) and the
    bench's own (feed server, watcher, clients), which are not judged."""

    def __init__(self, roots: dict[str, int], others: dict[str, int]) -> None:
        self.roots = roots
        self.others = others
        self.series: dict[int, Series] = {}
        self.start = time.time()

    def sample(self) -> None:
        now = time.time() - self.start
        mine = [(pid, name, True) for pid, name in family(self.roots).items()]
        for pid, name, tidings in mine + [(p, n, False) for n, p in self.others.items()]:
            s = self.series.setdefault(pid, Series(name, pid, tidings))
            s.points.append((now, live._rss_mb(pid)))

    def tidings_mb(self) -> float:
        """The Tidings processes' RSS at the latest sample, together."""
        return sum(s.points[-1][1] for s in self.series.values() if s.tidings and s.points)

    def names(self) -> dict[str, list[int]]:
        return {s.label: [s.pid] for s in self.series.values()}


def soak(args: argparse.Namespace) -> Result:
    """One soak run (see the module docstring): every figure."""
    from sqlalchemy.engine import make_url

    if args.wait_quiet > 0:
        waited = live._wait_for_quiet(args.wait_quiet)
        if waited > 2.5:
            print(f"  (waited {waited:.0f} s for the machine to be quiet)", flush=True)
    seconds = args.minutes * 60
    expected_items = len(schedule(args.sources, args.new_per_minute, seconds, args.seed))
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-soak-")))
        logs = args.logs or tmp
        logs.mkdir(parents=True, exist_ok=True)
        # Closed in reverse: the processes stop before their database is dropped.
        store_url, pg_server = make_store(args, tmp)
        stack.callback(drop_store, store_url, pg_server)
        database = make_url(store_url).database if pg_server else None
        run = Run(tmp, logs)
        stack.callback(run.close)
        appeared_file, commits_file = tmp / "appeared.txt", tmp / "commits.txt"

        feeds = run.spawn("feeds", _soak(
            "feeds", "--sources", str(args.sources), "--items", f"{args.items[0]}-{args.items[1]}",
            "--new-per-minute", str(args.new_per_minute), "--minutes", str(args.minutes),
            "--seed", args.seed, "--out", str(appeared_file),
        ), pipes=True)  # fmt: skip
        feeds_port = int(_readline(feeds, "the feed server"))
        config = write_config(tmp, store_url, feeds_port, args.sources, args.interval)
        tokens, admin_token = make_accounts(config, args.conns, args.users)
        (tmp / "tokens.json").write_text(json.dumps(tokens))
        store = StoreReader(store_url)
        stack.callback(store.close)
        watcher = run.spawn(
            "watcher", _soak("watcher", "--store-url", store_url, "--out", str(commits_file)),
            pipes=True,
        )  # fmt: skip
        if _readline(watcher, "the commit watcher") != "ready":
            raise SystemExit("the commit watcher failed")
        roots, ports = _start_tidings(args, run, config)

        print(f"first poll of {args.sources:,} sources ...", flush=True)
        t0 = time.monotonic()
        _wait("first poll of every source", lambda: store.unpolled() == 0,
              max(300.0, args.sources / 5), run)  # fmt: skip
        first_round = {"seconds": time.monotonic() - t0, "events": store.newest_id()}
        print(f"  {first_round['events']:,} events in {first_round['seconds']:.0f} s; "
              f"connecting {args.conns:,} clients ...", flush=True)  # fmt: skip
        clients, failed_to_connect = _start_clients(args, run, ports)
        # Everything above this id was committed after every client subscribed.
        baseline = store.newest_id()
        streams_at_start = [_metrics(p, admin_token) for p in ports]

        # The clock starts: items appear for `--minutes`.
        others = {"feeds": feeds.pid, "watcher": watcher.pid}
        others |= {f"clients{k}": p.pid for k, p in enumerate(clients)}
        cpu = live._Cpu({})
        started_at = datetime.now(UTC)
        assert feeds.stdin is not None
        feeds.stdin.write("go\n")
        feeds.stdin.flush()
        sampler = Sampler(roots, others)  # its clock starts now
        print(f"measuring for {args.minutes:g} min ...", flush=True)
        next_report = args.report_every * 60 if args.report_every > 0 else math.inf
        while (elapsed := time.time() - sampler.start) < seconds:
            sampler.sample()
            run.check_alive()
            if elapsed >= next_report:
                print(f"  {elapsed / 60:5.1f} min: {len(read_appeared(appeared_file)):,} items "
                      f"appeared, {store.new_items_stored():,} stored, "
                      f"{store.newest_id() - baseline:,} events; Tidings RSS "
                      f"{sampler.tidings_mb():,.0f} MB", flush=True)  # fmt: skip
                next_report += args.report_every * 60
            time.sleep(max(0.0, min(args.sample, seconds - (time.time() - sampler.start))))

        # Every item that appeared is stored within about one interval.
        drain_started = time.time()

        def all_stored() -> bool:
            sampler.sample()
            return bool(store.new_items_stored() >= expected_items)

        _wait("storing the last items", all_stored, interval_seconds(args) * 1.2 + 60, run)
        time.sleep(SETTLE)
        sampler.sample()
        drain = time.time() - drain_started

        used = cpu.stop({**sampler.names(), "database": _backends(pg_server, database)})
        streams_at_end = [_metrics(p, admin_token) for p in ports]
        feed_stats = fetch_stats(feeds_port)
        health = store.health(started_at)
        results = _stop_clients(run, clients)
        events = store.events_after(baseline)
        run.close()  # the logs are complete once the processes are gone
        logs_read = {name: read_log(logs / f"{name}.log") for name in roots}
        appeared = read_appeared(appeared_file)
        commits = commit_times(read_commits(commits_file), [i for i, _ in events])

    figures = deliveries(
        events, commits, results, appeared, conns=args.conns, workers=args.workers,
        start=sampler.start, measured=seconds, window=min(WINDOW, seconds),
    )  # fmt: skip
    warmup = min(args.warmup * 60, seconds / 4)
    series = sampler.series.values()
    return {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "first_round": first_round,
        "database": database,
        "baseline_id": baseline,
        "measured_s": seconds,
        "drain_s": drain,
        "items_scheduled": expected_items,
        **figures,
        "failed_to_connect": failed_to_connect,
        "streams_at_start": [m.get(SUBSCRIBERS, 0.0) for m in streams_at_start],
        "streams_at_end": [m.get(SUBSCRIBERS, 0.0) for m in streams_at_end],
        "slow_clients_dropped": sum(m.get(DROPPED, 0.0) for m in streams_at_end),
        "feed_server": feed_stats,
        "store_health": health,
        "logs": logs_read,
        "poll_failures_logged": sum(r["poll_failures"] for r in logs_read.values()),
        "warmup_s": warmup,
        "memory": {s.label: {**trend(s.points, warmup), "tidings": s.tidings} for s in series},
        "memory_tidings_total": trend(total_series([s for s in series if s.tidings]), warmup),
        "cpu_s": {k: v for k, v in used.items() if isinstance(v, float)},
        "busiest_others": used["busiest_others"],
        "rss_series": {s.label: s.points for s in series},
    }


def _backends(pg_server: str | None, database: str | None) -> list[int]:
    """The PostgreSQL server processes serving the run's database, now."""
    if pg_server is None:
        return []
    query = "SELECT pid FROM pg_stat_activity WHERE datname = :name"
    return [int(p) for p in live._pg_admin(pg_server, query, name=database)]


# --- the figures ------------------------------------------------------------------


def _latency_of(values: array[float]) -> Result:
    """p50/p90/p95/p99/max in ms (bench.live's), and how many values."""
    return {"n": len(values), **live._latency(sorted(values))}


def deliveries(
    events: Sequence[tuple[int, str]],
    commits: Mapping[int, float],
    clients: Sequence[Result],
    appeared: Mapping[int, float],
    *,
    conns: int,
    workers: int,
    start: float,
    measured: float,
    window: float,
) -> Result:
    """Who got what, and how late. `events` are (id, external id) of every event
    committed after the clients subscribed; each connected client must get each
    once. `commits` maps ids to commit times, `appeared` item numbers to their
    appearance upstream; `clients` are bench.live's client results. Latency is
    also given per `window` seconds of commit time from `start`, the commits
    after `measured` seconds in the last."""
    index = {event_id: n for n, (event_id, _) in enumerate(events)}
    item_of = {
        event_id: int(x.rsplit("/new", 1)[1])
        for event_id, x in events
        if x.startswith(GUID_PREFIX) and "/new" in x
    }
    appear_of = {i: appeared[k] for i, k in item_of.items() if k in appeared}
    failed: set[int] = set()
    closes: dict[int, int | None] = {}
    for r in clients:
        failed.update(r["failed"])
        closes.update(r["closes"])
    got = {c: bytearray(len(events)) for c in range(conns) if c not in failed}
    commit_screen: array[float] = array("d")
    appear_screen: array[float] = array("d")
    windows: dict[int, array[float]] = {}
    # Commits after the measured time (the last items') count in its last window.
    last_window = max(0, math.ceil(measured / window) - 1)
    duplicates = [0] * workers
    out_of_order = [0] * workers  # arrivals of an id below one the client already had
    last: dict[int, int] = {}  # connection -> the highest event (position) it got
    unexpected = 0  # events committed before the clients subscribed, delivered anyway
    for r in clients:
        for conn, event_id, t in zip(r["conn"], r["ids"], r["times"], strict=True):
            n = index.get(event_id)
            if n is None:
                unexpected += 1
                continue
            seen = got.get(conn)
            if seen is None:  # its subscription failed: it counts nowhere
                continue
            if seen[n]:
                duplicates[live.server_of(conn, workers)] += 1
                continue
            seen[n] = 1
            if n < last.get(conn, -1):
                out_of_order[live.server_of(conn, workers)] += 1
            else:
                last[conn] = n
            if (committed := commits.get(event_id)) is not None:
                commit_screen.append(t - committed)
                w = min(last_window, max(0, int((committed - start) // window)))
                windows.setdefault(w, array("d")).append(t - committed)
            if (upstream := appear_of.get(event_id)) is not None:
                appear_screen.append(t - upstream)
    held = [0] * workers
    missing = [0] * workers
    for conn, seen in got.items():
        k = live.server_of(conn, workers)
        held[k] += 1
        missing[k] += len(events) - sum(seen)
    appear_commit = array("d", (commits[i] - t for i, t in appear_of.items() if i in commits))
    return {
        "events": len(events),
        "events_without_commit_time": sum(1 for i, _ in events if i not in commits),
        "items_appeared": len(appeared),
        "items_stored": len(appear_of),
        "connected": sum(held),
        "expected": len(events) * sum(held),
        "received": len(events) * sum(held) - sum(missing),
        "missing": sum(missing),
        "duplicates": sum(duplicates),
        "out_of_order": sum(out_of_order),
        "delivered_before_start": unexpected,
        "server_closes": {str(code): n for code, n in _count(closes.values()).items()},
        "commit_to_screen": _latency_of(commit_screen),
        "commit_to_screen_windows": [
            {"from_s": w * window, "to_s": (w + 1) * window, **_latency_of(windows[w])}
            for w in sorted(windows)
        ],
        "appear_to_commit": _latency_of(appear_commit),
        "appear_to_screen": _latency_of(appear_screen),
        "per_worker": [
            {
                "connected": held[k],
                "missing": missing[k],
                "duplicates": duplicates[k],
                "out_of_order": out_of_order[k],
            }
            for k in range(workers)
        ],
    }


def _count(codes: Iterable[int | None]) -> dict[int, int]:
    """Close codes the server sent, counted. None (no close frame: the bench's
    own stop, or a lost connection) is left out: a lost one shows as missing."""
    out: dict[int, int] = {}
    for code in codes:
        if code is not None:
            out[code] = out.get(code, 0) + 1
    return out


# --- the report -------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def _seconds(value: float) -> str:
    return "-" if value != value else f"{value / 1000:,.1f}"


def _latency_row(label: str, d: Result, fmt: Any = _ms) -> str:
    cells = [fmt(d[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
    return f"  {label:24}{d['n']:>12,}" + "".join(f"{c:>9}" for c in cells)


def print_report(r: Result, args: argparse.Namespace) -> None:
    store = (
        "SQLite (a fresh file; the tails look every 25 ms)"
        if args.store == "sqlite"
        else "PostgreSQL (a fresh database, dropped afterwards; LISTEN/NOTIFY)"
    )
    minutes = r["measured_s"] / 60
    print()
    print(f"Soak: {args.workers} web worker(s) + {args.pollers} poller(s) on {store}; "
          f"{args.sources:,} sources polled every {args.interval}, {args.new_per_minute:g} new "
          f"items a minute; {args.conns:,} clients subscribed to everything; {minutes:g} min "
          f"(+{r['drain_s']:.0f} s until the last item was stored)")  # fmt: skip
    print(f"First poll of every source: {r['first_round']['events']:,} events in "
          f"{r['first_round']['seconds']:.0f} s (before the clients connected)")  # fmt: skip
    ok = r["missing"] == r["duplicates"] == r["out_of_order"] == 0
    print(f"\nDeliveries: {r['events']:,} events committed x {r['connected']:,} clients = "
          f"{r['expected']:,} expected; {r['received']:,} received; {r['missing']:,} missing; "
          f"{r['duplicates']:,} duplicates; {r['out_of_order']:,} out of id order "
          f"-> {'OK' if ok else 'NOT OK'}")  # fmt: skip
    if r["delivered_before_start"]:
        print(f"  ({r['delivered_before_start']:,} deliveries of events committed before "
              "the clients subscribed, not counted)")  # fmt: skip
    if args.workers > 1:
        for k, w in enumerate(r["per_worker"], 1):
            print(f"  worker {k}: {w['connected']} clients, {w['missing']:,} missing, "
                  f"{w['duplicates']:,} duplicates, "
                  f"{w['out_of_order']:,} out of order")  # fmt: skip
    print(f"Items: {r['items_appeared']:,} appeared upstream (of {r['items_scheduled']:,} "
          f"scheduled), {r['items_stored']:,} stored as events")  # fmt: skip
    heard = "NOTIFY heard by a LISTENing process" if args.store == "postgresql" else (
        "the newest id seen by a process looking every 10 ms"
    )  # fmt: skip
    print(f"\nLatency (commit: {heard}):")
    print(f"  {'':24}{'deliveries':>12}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    print(_latency_row("commit -> screen, ms", r["commit_to_screen"]))
    for w in r["commit_to_screen_windows"]:
        label = f"  {w['from_s'] / 60:g}-{w['to_s'] / 60:g} min"
        print(_latency_row(label, w))
    print(_latency_row("appear -> screen, s", r["appear_to_screen"], _seconds))
    print(_latency_row("appear -> commit, s", r["appear_to_commit"], _seconds) + "  (items)")
    if r["events_without_commit_time"]:
        print(f"  {r['events_without_commit_time']:,} events were never announced: "
              "left out of commit -> screen")  # fmt: skip

    fs, h = r["feed_server"], r["store_health"]
    print(f"\nPolls: the feed server answered {fs['requests']:,.0f} requests "
          f"({fs['ok']:,.0f} 200s, {fs['not_modified']:,.0f} 304s) with "
          f"{fs['cpu']:.1f} CPU s in all")  # fmt: skip
    print(f"Errors: {r['poll_failures_logged']} failed polls logged; "
          f"{h['sources_failed_during_run']} sources failed during the run, "
          f"{h['sources_failing_at_end']} still failing at the end")  # fmt: skip
    for example in h["error_examples"]:
        print(f"  {example}")
    for name, log in r["logs"].items():
        if log["warnings"] or log["errors"] or log["tracebacks"]:
            print(f"  {name} logged {log['warnings']} warnings, {log['errors']} errors, "
                  f"{log['tracebacks']} tracebacks, e.g.:")  # fmt: skip
            for line in log["examples"][:3]:
                print(f"    {line}")
    closes = r["server_closes"] or "none"
    print(f"Websockets: {r['connected']:,} connected ({r['failed_to_connect']} failed); "
          f"closed by the server: {closes}; {r['slow_clients_dropped']:.0f} dropped as too "
          f"slow; open streams per worker at the start {_ints(r['streams_at_start'])}, "
          f"at the end {_ints(r['streams_at_end'])}")  # fmt: skip

    seconds = r["cpu_s"].get("seconds", 0.0) or 1.0
    print(f"\nMemory (RSS, MB) from the first sample after {r['warmup_s'] / 60:g} min; slope by "
          f"least squares, flagged at >= {GROWTH_MB_PER_HOUR:g} MB/h over >= "
          f"{MIN_TREND_SPAN / 60:g} min of samples; CPU over "
          f"{seconds:.0f} s:")  # fmt: skip
    print(f"  {'process':36}{'first':>8}{'last':>8}{'max':>8}{'MB/h':>8}  {'':8}{'cores':>7}")
    rows = sorted(r["memory"].items(), key=lambda kv: (not kv[1]["tidings"], kv[0]))
    for name, m in rows:
        if not m.get("samples"):
            continue
        cores = r["cpu_s"].get(name, 0.0) / seconds
        print(f"  {name[:36]:36}{m['first_mb']:8.0f}{m['last_mb']:8.0f}{m['max_mb']:8.0f}"
              f"{m['slope_mb_per_h']:8.1f}  {m['verdict'] if m['tidings'] else '':8}"
              f"{cores:7.2f}")  # fmt: skip
    t = r["memory_tidings_total"]
    if t.get("samples"):
        cores = sum(r["cpu_s"].get(n, 0.0) for n, m in rows if m["tidings"]) / seconds
        print(f"  {'all Tidings processes':36}{t['first_mb']:8.0f}{t['last_mb']:8.0f}"
              f"{t['max_mb']:8.0f}{t['slope_mb_per_h']:8.1f}  {t['verdict']:8}"
              f"{cores:7.2f}")  # fmt: skip
    cpu = r["cpu_s"]
    other = cpu.get("machine", 0.0) - sum(
        v for k, v in cpu.items() if k not in ("machine", "seconds", "wall0", "wall1")
    )
    database = (
        f"PostgreSQL backends of the run {cpu.get('database', 0.0) / seconds:.2f} cores; "
        if args.store == "postgresql"
        else ""
    )
    print(f"  {database}whole machine {cpu.get('machine', 0.0) / seconds:.2f} cores, "
          f"of which others {max(0.0, other) / seconds:.2f}")  # fmt: skip
    if r["busiest_others"]:
        print(
            "  busy meanwhile: " + "; ".join(f"{n} {s:.0f} CPU s" for n, s in r["busiest_others"])
        )
    growing = [n for n, m in r["memory"].items() if m["tidings"] and m.get("verdict") == "GROWING"]
    if growing or t.get("verdict") == "GROWING":
        print(f"\nWARNING: memory grew: {', '.join(growing) or 'all Tidings processes together'}")
    p99 = r["commit_to_screen"]["p99_ms"]
    verdict = "not measured" if p99 != p99 else "met" if p99 <= live.TARGET_P99_MS else "MISSED"
    print(f"\nTarget p99 commit -> screen <= {live.TARGET_P99_MS:g} ms: {_ms(p99)} ms -> {verdict}")


def _ints(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", choices=("postgresql", "sqlite"), default="postgresql",
        help="the store everything shares (default: postgresql)",
    )  # fmt: skip
    parser.add_argument(
        "--pg-server", default=live.PG_SERVER,
        help="for --store postgresql: the server, as a SQLAlchemy URL to a database there "
        "(the run gets a fresh database, dropped after it; default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="`tidings serve --no-poller`s")
    parser.add_argument("--pollers", type=int, default=2, help="`tidings poller`s")
    parser.add_argument("--sources", type=int, default=2000, help="feeds, one source each")
    parser.add_argument(
        "--items", type=parse_items, default=(3, 5),
        help=f"items each feed starts with, N or MIN-MAX (default 3-5; feedgen's is "
        f"{ITEMS[0]}-{ITEMS[1]})",
    )  # fmt: skip
    parser.add_argument(
        "--interval", default="1m", help="every source's poll interval (at least 5s; default 1m)"
    )
    parser.add_argument(
        "--new-per-minute", type=float, default=200.0, help="new items a minute, all feeds together"
    )
    parser.add_argument("--seed", default=SEED, help="which feeds and items (default: feedgen's)")
    parser.add_argument("--conns", type=int, default=1000, help="websocket clients")
    parser.add_argument("--client-procs", type=int, default=4, help="processes holding them")
    parser.add_argument("--users", type=int, default=100, help="member users sharing the tokens")
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of new items")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument(
        "--warmup", type=float, default=2.0,
        help="minutes of RSS left out of its trend (at most a quarter of the run; default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--report-every", type=float, default=5.0, help="minutes between progress lines (0: none)"
    )
    parser.add_argument(
        "--wait-quiet", type=float, default=120,
        help="first wait up to this many seconds for an idle machine (0: don't)",
    )  # fmt: skip
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--role", choices=("feeds", "watcher", "clients"), help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "feeds":
        return _feeds_main(args)
    if args.role == "watcher":
        return _watcher_main(args)
    if args.role == "clients":
        return _clients_main(args)

    from aggregator.config import MIN_INTERVAL

    try:
        interval = interval_seconds(args)
    except ValueError as err:
        parser.error(f"--interval: {err}")
    if interval < MIN_INTERVAL:
        parser.error(f"--interval: at least {MIN_INTERVAL:g}s (aggregator.config.MIN_INTERVAL)")
    if not 1 <= args.workers <= args.conns or args.pollers < 1 or args.sources < 1:
        parser.error("--workers from 1 to --conns; --pollers and --sources at least 1")
    if args.new_per_minute <= 0 or args.minutes <= 0 or args.sample <= 0:
        parser.error("--new-per-minute, --minutes and --sample must be positive")
    print(environment(", ".join(f"{n} {package_version(n)}" for n in ("uvicorn", "websockets"))))
    started = time.perf_counter()
    result = soak(args)
    print_report(result, args)
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
