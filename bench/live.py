"""Live push capacity: the highest event rate Tidings and a bare broadcast sustain.

    python -m bench.live                           # 1,000 clients (make bench): about 5 min
    python -m bench.live --conns 200 --seconds 3   # a quick look
    python -m bench.live --store postgresql --workers 2    # through LISTEN/NOTIFY (issue 13)
    python -m bench.live --rate 20                 # fixed rate: 3 runs x 20 s at 20 events/s

Capacity (the default; issue 15). For each side in turn, the bench looks for
the highest event rate it sustains with `--conns` (1,000) websocket clients. A step runs one
rate R: `--warmup` (1) + `--seconds` (5) seconds' worth of events committed at
R per second on a fixed schedule, then `--drain` (1) seconds for the last
deliveries. R is *sustained* when all of these hold:

- p99 latency, over every delivery of the events after the warm-up, is at
  most 100 ms (latency: below);
- nothing is lost: every connection got every event of the step, warm-up
  included, once each and in commit order, within the drain; none was closed
  (1013 or otherwise) and none failed to connect;
- the commits kept up: from the step's first commit to its last, at least
  95% of R per second.

The first step runs 5 events/s; R doubles until a step fails (or, if the
first fails, halves down to 1/s), then the range between the highest rate
sustained and the lowest failed is bisected (midpoint, 3 significant digits)
until the failed rate is within 10% of the sustained one. A side stops early
when its next step would likely end after `--budget` (120) seconds from its
start (the estimate: the last step's time, restart included); the report
says so. Sustained steps run one after another on the same servers and
clients; after a failed step the side starts again on fresh servers, a fresh
store and fresh clients, so a backlog or a closed connection does not spill
into the next step. The report gives each side's highest sustained rate, its
deliveries/s and latency there, the step above it that failed and why, and
the ratio of the sustained rates, Tidings / floor. The search assumes that a
rate above a failed one fails too; a step is a few seconds, so one GC pause
or a burst of other work can fail a rate that a longer step would pass.
`--runs N` repeats each side's search N times and reports medians.

Latency is measured from the same point on both sides, the commit:

- Tidings: a writer process, as `tidings poller` would, commits each event in
  its own `Store.record_poll` transaction and takes `time.time()` right after
  it returns. Everything after that is in the latency, the store-poll tail
  included: on SQLite a server's EventTail looks for new events every 25 ms
  (so an event waits 0-25 ms to be seen); on PostgreSQL each commit NOTIFYs
  every worker. Then the read, the filters, the queues and the sends.
- the floor: a thread in each floor process commits each event in its own
  transaction (`BEGIN IMMEDIATE`, one INSERT of the event's fields, `COMMIT`)
  to a SQLite file of that process's, with Tidings' SQLite settings (WAL,
  `synchronous=NORMAL`), also with `--store postgresql`; it takes `time.time()`
  right after the commit and hands the event to the event loop, so the wait
  behind an earlier fan-out is in its latency, as is building the message.
  No look for new events: the commit hands it over.

The end point is the client process's `time.time()` when it reads the chunk
with the event's message. One machine, one clock.

Noise is reported, not repeated away: the bench reads the machine's busy
time from /proc/stat (`bench.feeds._machine_busy`) over each step and takes
away the CPU of the servers, client processes, writer and PostgreSQL
backends; a step during which the rest used more than `--max-other` (0.15)
cores is marked NOISY on its line, with the busiest other processes, and the
report repeats the mark for the steps that decided a side's rate. Before each
side's search the bench waits up to `--wait-quiet` (20) seconds for an idle
machine. As each side's search stops at `--budget`, the whole run, with the
store made once (a few seconds) and those waits, stays near 5 minutes.

Fixed-rate mode (`--rate R`): `--runs` (3) runs per side of `--seconds` (20)
s at R, each with fresh servers and clients; figures are medians, against the
targets of its issue (throughput at least 0.7x the floor's, p99 at most 150
ms); a run during which other processes used more than `--max-other` cores is
repeated (`--retries`, 2) and the report says how often. `--wait-quiet`
(120) before each side.

Both modes, each side with fresh servers and fresh client processes:

- Tidings: `--workers` real `tidings serve --no-poller` processes (uvicorn,
  websockets-sansio; one by default) on a fresh store with four sources: a
  copy of a SQLite file, or with `--store postgresql` a database made for the
  run on `--pg-server` (from a template made once) and dropped after it. Each
  server learns of the writer's commits through its EventTail and pushes each
  event to every subscribed client. Every client has its own query, and
  every query matches every event.
- the floor (`bench.broadcast_floor`): a bare Starlette app under the same
  uvicorn that sends each committed event to every connected client, with no
  filter, queue or task per client; as many processes as there are workers,
  each with its own share of the clients and its own SQLite file.

The same client processes (several, each holding a share of the websocket
connections through `websockets`' sans-I/O client protocol on a bare asyncio
Protocol, so that the load generator stays cheap) subscribe before the first
event and note the arrival time of each event message. They share the two
cores with the servers, so a side's capacity here is that of the server and
its load together. Connection i goes to server i mod `--workers`, so each
server has an even share. The bench joins commit and arrival times by event
id afterwards; figures are given overall and, with several servers in
fixed-rate mode, per server.

Clients authenticate as `tidings` users do: 100 member users of group
`staff` (the sources' audience) with one API token per client, sent as
`Authorization: Bearer` on the handshake, so every delivery passes a real
visibility check (`--auth setup`: no accounts, loopback clients let in).
`--profile DIR` runs the servers under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.feeds import (
    _cpu_ticks,
    _machine_busy,
    _peak_rss_mb,
    _proc_stat,
    environment,
    package_version,
)

CAPACITY_P99_MS = 100.0  # issue 15: the rate a side sustains with p99 at most this
START_RATE = 5.0  # events/s of the first step; doubled until a step fails
MIN_RATE = 1.0  # ... or halved, when the first fails, down to this
RESOLUTION = 1.1  # then bisected until the failed rate is within 10% of the sustained
COMMIT_PACE = 0.95  # a step whose commits came slower than this share of its rate fails
MODE_DEFAULTS = {  # option: (capacity search, fixed-rate mode)
    "seconds": (5.0, 20.0),
    "warmup": (1.0, 2.0),
    "drain": (1.0, 2.0),
    "runs": (1, 3),
    "wait_quiet": (20.0, 120.0),
}
TARGET_RATIO = 0.7  # the issue: at least 0.7 of the floor's delivered messages/s
TARGET_P99_MS = 150.0  # ... and p99 commit-to-receive latency at most 150 ms
ROOT = Path(__file__).resolve().parent.parent
STREAM = "live"
SOURCES = ("wiki", "tickets", "ci", "news")
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
Result = dict[str, Any]
_RUNS = itertools.count(1)  # names each run's PostgreSQL database


# --- what is sent: the same content on both sides ------------------------------


@dataclass(frozen=True, slots=True)
class SampleEvent:
    source_id: str
    external_id: str
    title: str
    summary: str
    content_html: str
    url: str
    actor: str
    tags: tuple[str, ...]


def sample_event(n: int) -> SampleEvent:
    """Event number `n`: about the size of a wiki edit or a ticket update (1 KB
    as a message)."""
    source = SOURCES[n % len(SOURCES)]
    words = " ".join(f"w{(n * 7 + i) % 97}" for i in range(24))
    return SampleEvent(
        source_id=source,
        external_id=f"{source}-{n}",
        title=f"Benchmark event {n}: quarterly review of the {source} backlog",
        summary=f"Jane Doe changed page {n}. {words}",
        content_html=(
            f"<p>Jane Doe changed <a href='https://{source}.intranet/page/{n}'>page {n}</a>"
            f" of the {source} space.</p><p>{words} <em>{words}</em></p>"
            f"<ul><li>one change</li><li>another change</li></ul>"
        ),
        url=f"https://{source}.intranet/page/{n}",
        actor="Jane Doe",
        tags=("bench", source),
    )


def query_for(index: int) -> str:
    """Client `index`'s own query; every one of them matches every event."""
    nothing = f"-source:nothing-{index}"
    variants = (
        nothing,
        f"kind:feed {nothing}",
        f"source:{','.join(SOURCES)} {nothing}",
        f"-kind:imap {nothing}",
    )
    return variants[index % len(variants)]


# --- the client processes ----------------------------------------------------

_EVENT_ID = re.compile(rb'^\{"type":"event","stream":"[^"]*","event":\{"id":(\d+)')


class _Sink:
    """Everything one client process received (since the last `dump`): one
    row per event message."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.conn = array("I")
        self.ids = array("I")
        self.times = array("d")
        self.bytes = 0
        self.closes: dict[int, int | None] = {}  # connection -> close code (None: lost)


class _Client:
    """One websocket connection: websockets' sans-I/O protocol on an asyncio
    Protocol. It parses only the event id of each message, with a regex."""

    def __init__(self, index: int, url: str, token: str | None, sink: _Sink) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.index = index
        self.token = token
        self.sink = sink
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.subscribed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        request = self.ws.connect()
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            opcode = getattr(event, "opcode", None)
            if opcode is None:  # the handshake's response
                if ws.handshake_exc is not None:
                    self._fail(ws.handshake_exc)
                    continue
                subscribe = {"type": "subscribe", "stream": STREAM, "query": query_for(self.index)}
                ws.send_text(json.dumps({**subscribe, "cursor": None}).encode())
            elif opcode.name == "TEXT":
                match = _EVENT_ID.match(event.data)
                if match is not None:
                    sink = self.sink
                    sink.conn.append(self.index)
                    sink.ids.append(int(match[1]))
                    sink.times.append(now)
                    sink.bytes += len(event.data)
                elif not self.subscribed.done() and b'"subscribed"' in event.data:
                    self.subscribed.set_result(None)
                elif b'"error"' in event.data:
                    self._fail(RuntimeError(bytes(event.data).decode()))
            elif opcode.name == "CLOSE":
                code = ws.close_rcvd.code if ws.close_rcvd else None
                self.sink.closes[self.index] = code
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.closes.setdefault(self.index, None)
        self._fail(ConnectionError(f"connection {self.index} lost"))

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _fail(self, exc: BaseException) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(exc)


async def _clients_main(args: argparse.Namespace, tokens: list[str | None]) -> int:
    loop = asyncio.get_running_loop()
    sink = _Sink()
    gate = asyncio.Semaphore(25)  # handshakes in flight
    clients: list[_Client] = []

    ports = [int(p) for p in args.ports.split(",")]

    async def open_one(index: int) -> None:
        token = tokens[index] if index < len(tokens) else None
        port = ports[server_of(index, len(ports))]
        client = _Client(index, f"ws://127.0.0.1:{port}/ws", token, sink)
        clients.append(client)
        async with gate:
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            await asyncio.wait_for(client.subscribed, 60)

    indices = range(args.first, args.first + args.count)
    results = await asyncio.gather(*(open_one(i) for i in indices), return_exceptions=True)
    failed = [i for i, r in zip(indices, results, strict=True) if isinstance(r, BaseException)]
    first = next((r for r in results if isinstance(r, BaseException)), "")
    print(f"ready {len(results) - len(failed)} {len(failed)} {first}")
    sys.stdout.flush()
    while True:
        # "dump PATH": what was received so far, into PATH, and start afresh
        # (one step of the capacity search); "stop", or EOF: the end.
        command, _, path = (await loop.run_in_executor(None, sys.stdin.readline)).partition(" ")
        if command != "dump":
            break
        _write_client_result(Path(path.strip()), sink, failed=failed)
        sink.clear()
        print("dumped", flush=True)
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(0.1)  # the close frames go out
    _write_client_result(Path(args.out), sink, failed=failed)
    return 0


def server_of(conn: int, servers: int) -> int:
    """Which of `servers` connection `conn` goes to: an even share for each."""
    return conn % servers


def _write_client_result(out: Path, sink: _Sink, failed: list[int]) -> None:
    for name in ("conn", "ids", "times"):
        with out.with_suffix(f".{name}").open("wb") as f:
            getattr(sink, name).tofile(f)
    meta = {"bytes": sink.bytes, "closes": sink.closes, "failed": failed}
    out.write_text(json.dumps(meta))


def _read_client_result(out: Path) -> Result:
    meta: Result = json.loads(out.read_text())
    for name, code in (("conn", "I"), ("ids", "I"), ("times", "d")):
        data = array(code)
        path = out.with_suffix(f".{name}")
        with path.open("rb") as f:
            data.frombytes(f.read())
        meta[name] = data
    meta["closes"] = {int(k): v for k, v in meta["closes"].items()}
    return meta


# --- the writer (Tidings' side): another process commits, as a poller would ---


def _writer_main(args: argparse.Namespace) -> int:
    """Commits events for the bench, one `Store.record_poll` transaction each,
    as `tidings poller` would. Once its store is open it says "ready"; then,
    for each `step RATE COUNT OUT` it reads, it sanitises the next COUNT events
    (numbered on from the last step's) before the clock starts, says "ready",
    and on "go" commits them at RATE per second on a fixed schedule, writes
    `{"cpu": ..., "commits": [[event id, time after commit, time before]]}` to
    OUT and says "done". Anything else, or EOF, ends it: until then it keeps its
    connection (on PostgreSQL the bench counts the CPU of the server process
    behind it)."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from datetime import UTC, datetime, timedelta

    from aggregator.config import load_config
    from aggregator.decide import prepare
    from aggregator.store import Store
    from aggregator.types import Actor, EventData

    config = load_config(args.config)
    sources = {s.id: s for s in config.sources}
    store = Store(config.store_url)
    later = datetime.now(UTC) + timedelta(days=1)
    numbers = itertools.count(1)  # external ids stay unique from step to step
    print("ready", flush=True)
    while (words := sys.stdin.readline().split())[:1] == ["step"]:
        rate, count, out = float(words[1]), int(words[2]), Path(words[3])
        batches = []
        for n in itertools.islice(numbers, count):  # sanitised before the clock starts
            e = sample_event(n)
            data = EventData(
                external_id=e.external_id,
                title=e.title,
                summary=e.summary,
                content_html=e.content_html,
                url=e.url,
                actor=Actor(e.actor),
                tags=e.tags,
            )
            batches.append((sources[e.source_id], prepare([data])))
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            break
        cpu0 = time.process_time()
        rows: list[tuple[int, float, float]] = []
        start = time.monotonic()
        for n, (source, items) in enumerate(batches):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            before = time.time()
            [event_id] = store.record_poll(
                source, items, state=None, now=datetime.now(UTC), next_poll_at=later
            )
            rows.append((event_id, time.time(), before))
        cpu = time.process_time() - cpu0
        out.write_text(json.dumps({"cpu": cpu, "commits": rows}))
        print("done", flush=True)
    store.close()
    return 0


# --- one side, one run ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            _get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server did not answer in 30 s:\n{log.read_text()[-3000:]}")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _all_ticks() -> dict[int, int]:
    return _cpu_ticks([int(e) for e in os.listdir("/proc") if e.isdigit()])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words[:4])[:60]


class _Cpu:
    """CPU seconds of some processes over a window, from /proc; and which
    other processes on the machine were busy meanwhile."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.everyone = _all_ticks()
        self.busy0 = _machine_busy()
        self.t0 = time.perf_counter()
        self.wall0 = time.time()

    def stop(self, more: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """The figures; `more` adds groups known only now (processes started
        in the window count from zero)."""
        tck = os.sysconf("SC_CLK_TCK")
        now = _all_ticks()
        used = {p: t - self.everyone.get(p, 0) for p, t in now.items()}
        out: dict[str, Any] = {}
        ours = {os.getpid()}
        for name, pids in {**self.groups, **(more or {})}.items():
            out[name] = sum(used.get(p, 0) for p in set(pids)) / tck
            ours.update(pids)
        out["machine"] = _machine_busy() - self.busy0
        out["seconds"] = time.perf_counter() - self.t0
        out["wall0"], out["wall1"] = self.wall0, time.time()
        others = sorted(((t, p) for p, t in used.items() if p not in ours), reverse=True)
        out["busiest_others"] = [(_comm(p), t / tck) for t, p in others[:3] if t / tck > 0.5]
        return out


# --- the store: a SQLite file, or a PostgreSQL database per run ------------------


@dataclass(frozen=True, slots=True)
class Template:
    """What every run starts from: a directory (with the tokens) and the store
    made once, a SQLite file there or a PostgreSQL database on the server."""

    directory: Path
    store_url: str
    pg_server: str | None = None  # where run databases are made, on PostgreSQL


def _pg_admin(server: str, sql: str, **params: Any) -> list[Any]:
    """One statement on the server's admin database, outside a transaction."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(sql), params)
            return list(result.scalars()) if result.returns_rows else []
    finally:
        engine.dispose()


def _pg_database(server: str, name: str, template: str | None = None) -> str:
    """Create database `name` (a copy of `template`) and return its URL."""
    from sqlalchemy.engine import make_url

    _pg_admin(server, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def make_template(args: argparse.Namespace, directory: Path) -> Template:
    """The template's (empty) store: see `_tidings_template` for what goes in."""
    if args.store == "sqlite":
        return Template(directory, f"sqlite:///{directory}/tidings.db")
    name = f"tidings_bench_live_{secrets.token_hex(3)}"
    return Template(directory, _pg_database(args.pg_server, name), args.pg_server)


def fresh_store(template: Template, directory: Path, run: int) -> str:
    """A copy of the template's store for one run: its URL."""
    if template.pg_server is None:
        for db in template.directory.glob("tidings.db*"):  # with its WAL, if any
            shutil.copy(db, directory / db.name)
        return f"sqlite:///{directory}/tidings.db"
    from sqlalchemy.engine import make_url

    name = make_url(template.store_url).database
    assert name is not None
    return _pg_database(template.pg_server, f"{name}_r{run}", template=name)


def drop_store(template: Template, store_url: str) -> None:
    """Drop a run's (or the template's) PostgreSQL database; SQLite files go
    with their temporary directory."""
    if template.pg_server is None:
        return
    from sqlalchemy.engine import make_url

    name = make_url(store_url).database
    _pg_admin(template.pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _backends(template: Template, store_url: str) -> list[int]:
    """The PostgreSQL server processes behind the connections to a run's
    database (one per connection; the server runs on this machine)."""
    if template.pg_server is None:
        return []
    from sqlalchemy.engine import make_url

    query = "SELECT pid FROM pg_stat_activity WHERE datname = :name"
    return [int(p) for p in _pg_admin(template.pg_server, query, name=make_url(store_url).database)]


def _tidings_template(args: argparse.Namespace, template: Template) -> list[str | None]:
    """A store with the sources, users and one API token per client, made once
    and copied for every run. Returns the tokens (None each in setup mode)."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from datetime import UTC, datetime

    from aggregator.config import load_config
    from aggregator.store import Store

    config_path = _write_config(template.directory, port=0, store_url=template.store_url)
    config = load_config(config_path)
    store = Store(config.store_url)
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now, config_file=str(config.path))
    tokens: list[str | None] = [None] * args.conns
    if args.auth == "tokens":
        people = store.people
        users = [f"bench{u:04d}" for u in range(max(1, min(args.users, args.conns)))]
        for name in users:
            people.create_user(name, password_hash=None, groups=["staff"], actor="bench", now=now)
        tokens = [
            people.create_token(users[i % len(users)], f"c{i}", actor="bench", now=now)
            for i in range(args.conns)
        ]
    store.close()
    return tokens


def _write_config(directory: Path, port: int, store_url: str) -> Path:
    path = directory / "config.toml"
    sources = "".join(
        f'\n[[sources]]\nid = "{sid}"\nkind = "feed"\nurl = "http://127.0.0.1:9/{sid}.xml"\n'
        f'interval = "10m"\naudience = ["staff"]\n'
        for sid in SOURCES
    )
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f"[store]\nurl = {json.dumps(store_url)}\n" + sources
    )
    return path


def _wait_for_quiet(limit: float) -> float:
    """Wait (at most `limit` seconds) until the machine has been nearly idle
    for two seconds: other work on two cores swamps what this measures.
    Returns the seconds waited."""
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    while True:
        busy0 = _machine_busy()
        time.sleep(2.0)
        if (_machine_busy() - busy0) / 2.0 < 0.1 * cores:
            return time.perf_counter() - started
        if time.perf_counter() - started >= limit:
            return time.perf_counter() - started


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _quiet(args: argparse.Namespace) -> None:
    if args.wait_quiet > 0:
        waited = _wait_for_quiet(args.wait_quiet)
        if waited > 2.5:
            print(f"  (waited {waited:.0f} s for the machine to be quiet)", flush=True)


class Side:
    """One side's processes, started afresh: `--workers` servers (Tidings'
    on a fresh copy of the template's store, each floor process with a SQLite
    file of its own), the client processes with every connection subscribed,
    and on Tidings' side the writer. Steps run on them one after another."""

    def __init__(self, side: str, args: argparse.Namespace, template: Template) -> None:
        self.side, self.args, self.template = side, args, template
        self.servers: list[subprocess.Popen[bytes]] = []
        self.clients: list[subprocess.Popen[str]] = []
        self.writer: subprocess.Popen[str] | None = None
        self.store_url: str | None = None
        self._steps = itertools.count(1)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-live-{side}-")
        self.tmp = Path(self._tmp.name)
        self.env = {
            **os.environ,
            "TIDINGS_DISABLE_PLUGINS": "1",
            # The code next to this file, whatever is installed.
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, sys.path)]),
        }

    def __enter__(self) -> Side:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        args, tmp = self.args, self.tmp
        ports: list[int] = []
        while len(ports) < args.workers:
            if (port := _free_port()) not in ports:
                ports.append(port)
        self.ports = ports
        logs = [tmp / f"server{k}.log" for k in range(args.workers)]
        config = None
        if self.side == "tidings":
            self.store_url = fresh_store(self.template, tmp, next(_RUNS))
            config = _write_config(tmp, ports[0], self.store_url)
        profiled = len(list(args.profile.glob(self.side + "-*"))) if args.profile else 0
        for k, (port, log) in enumerate(zip(ports, logs, strict=True)):
            if config is not None:
                cmd = ["-m", "aggregator.cli", "--log-level", "WARNING", "serve",
                       "--config", str(config), "--no-poller", "--port", str(port)]  # fmt: skip
            else:
                cmd = ["-m", "bench.broadcast_floor", "--port", str(port),
                       "--db", str(tmp / f"floor{k}.db")]  # fmt: skip
            if args.profile:  # it slows the server: for finding hot spots, not for figures
                args.profile.mkdir(parents=True, exist_ok=True)
                out = args.profile / f"{self.side}-{profiled + k}.prof"
                cmd = ["-m", "cProfile", "-o", str(out), *cmd]
            with log.open("wb") as log_file:
                server = subprocess.Popen(
                    [sys.executable, *cmd], cwd=tmp, stdout=log_file,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                )  # fmt: skip
            self.servers.append(server)
        for port, server, log in zip(ports, self.servers, logs, strict=True):
            _wait_healthy(port, server, log)
        self.rss_idle = [_rss_mb(s.pid) for s in self.servers]
        per = -(-args.conns // args.client_procs)
        for k in range(args.client_procs):
            first, n = k * per, min(per, args.conns - k * per)
            if n <= 0:
                break
            command = [
                sys.executable, "-m", "bench.live", "--role", "clients",
                "--ports", ",".join(map(str, ports)), "--first", str(first), "--count", str(n),
                "--tokens", str(self.template.directory / "tokens.json"),
                "--out", str(tmp / f"clients{k}.json"),
            ]  # fmt: skip
            self.clients.append(
                subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env
                )
            )
        for proc in self.clients:
            assert proc.stdout is not None
            line = proc.stdout.readline().split(maxsplit=3)
            if not line or line[0] != "ready":
                raise SystemExit(f"a client process failed to start ({line})")
            if int(line[2]):
                print(f"  {line[2]} connections failed: {' '.join(line[3:])}", flush=True)
        time.sleep(0.5)  # let the last subscriptions settle
        self.rss_connected = [_rss_mb(s.pid) for s in self.servers]
        trees = [_descendants(s.pid) for s in self.servers]
        self.groups = {
            "server": [p for tree in trees for p in tree],
            **{f"server{k}": tree for k, tree in enumerate(trees)},
            "clients": [p.pid for p in self.clients],
        }
        if config is not None:
            self.writer = subprocess.Popen(
                [sys.executable, "-m", "bench.live", "--role", "writer", "--config", str(config)],
                env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert self.writer.stdout is not None
            if self.writer.stdout.readline().strip() != "ready":
                raise SystemExit("the writer failed to start")

    def step(self, rate: float) -> Result:
        """`--warmup` + `--seconds` of events at `rate`, then `--drain`
        seconds for the last deliveries: the step's figures (`_figures`), with
        its `rate` and the rate at which the commits came (`commits_per_s`)."""
        args = self.args
        count = max(2, round((args.warmup + args.seconds) * rate))
        k = next(self._steps)
        if self.writer is not None:
            out = self.tmp / f"commits{k}.json"
            _tell(self.writer, f"step {rate!r} {count} {out}", "ready", "the writer")
            cpu = _Cpu(self.groups)
            _tell(self.writer, "go", "done", "the writer")
            # Its connection is still open, as are the servers'.
            assert self.store_url is not None
            database = _backends(self.template, self.store_url)
            figures = cpu.stop({"database": database, "writer": [self.writer.pid]})
            written = json.loads(out.read_text())
            figures["writer"] = written["cpu"]
            commits = [[tuple(r) for r in written["commits"]]] * len(self.servers)
        else:
            bases = [f"http://127.0.0.1:{port}" for port in self.ports]
            cpu = _Cpu(self.groups)
            for base in bases:
                _get(f"{base}/produce?rate={rate!r}&count={count}", method="POST")
            bodies: list[Any] = [None] * len(bases)
            while not all(body and body["done"] for body in bodies):
                time.sleep(0.2)
                # A floor past its capacity answers late, busy sending: that
                # step fails on its latency, not on this look.
                bodies = [json.loads(_get(f"{base}/produced", timeout=120)) for base in bases]
            figures = cpu.stop()
            commits = [[(i, t, t) for i, t in body["events"]] for body in bodies]
        time.sleep(args.drain)  # what is still on its way
        rss_peak = [_peak_rss_mb(s.pid) for s in self.servers]
        rss_end = [_rss_mb(s.pid) for s in self.servers]
        outs = [self.tmp / f"clients{c}-step{k}.json" for c in range(len(self.clients))]
        for proc, path in zip(self.clients, outs, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"dump {path}\n")
            proc.stdin.flush()
        for c, proc in enumerate(self.clients):
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "dumped":
                raise SystemExit(f"client process {c} failed (exit {proc.poll()})")
        result = _figures(
            argparse.Namespace(**{**vars(args), "rate": rate}),
            commits=commits,
            clients=[_read_client_result(path) for path in outs],
            cpu=figures,
            rss={
                "idle": self.rss_idle,
                "connected": self.rss_connected,
                "end": rss_end,
                "peak": rss_peak,
            },
        )
        result["rate"] = rate
        result["commits_per_s"] = min(_commit_rate(table) for table in commits)
        return result

    def close(self) -> None:
        """Stop everything (the clients first, then the servers), drop the
        store and remove the files."""
        for proc in [*self.clients, *([self.writer] if self.writer else [])]:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()  # EOF: the end
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self.servers:
            # uvicorn re-raises the signal it stopped on; cProfile writes its
            # file on the KeyboardInterrupt that SIGINT then becomes.
            _stop(server, signal.SIGINT if self.args.profile else signal.SIGTERM)
        self.clients, self.writer, self.servers = [], None, []
        if self.store_url is not None:
            drop_store(self.template, self.store_url)
            self.store_url = None
        self._tmp.cleanup()


def _tell(proc: subprocess.Popen[str], line: str, answer: str, who: str) -> None:
    """Send a process a line and wait for its answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    if (said := proc.stdout.readline().strip()) != answer:
        raise SystemExit(f"{who} failed (said {said!r}; exit {proc.poll()})")


def _commit_rate(table: Sequence[tuple[Any, ...]]) -> float:
    """Commits per second from the first to the last of a step's."""
    span = table[-1][1] - table[0][1] if len(table) > 1 else 0.0
    return (len(table) - 1) / span if span > 0 else float("inf")


def run_side(side: str, args: argparse.Namespace, template: Template) -> Result:
    """One side, one run at `--rate` (fixed-rate mode): fresh servers
    (`--workers` of them), fresh client processes, fresh data."""
    _quiet(args)
    with Side(side, args, template) as processes:
        return processes.step(args.rate)


def _pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _latency(sorted_values: Sequence[float]) -> Result:
    out = {f"p{p}_ms": _pct(sorted_values, p) * 1000 for p in (50, 90, 95, 99)}
    out["max_ms"] = (sorted_values[-1] if sorted_values else float("nan")) * 1000
    return out


def _figures(
    args: argparse.Namespace,
    *,
    commits: list[list[tuple[Any, ...]]],
    clients: list[Result],
    cpu: dict[str, float],
    rss: dict[str, list[float]],
) -> Result:
    """The figures of one run. `commits[k]` is server k's table of `(event id,
    time after commit, time before)`: the writer's for every Tidings worker,
    its own for each floor process. Connection i is server `server_of(i)`'s."""
    n = len(commits)
    committed = [{int(i): t for i, t, _ in table} for table in commits]
    order = sorted(committed[0])
    measured = set(order[round(args.warmup * args.rate) :])
    window0 = min(c[i] for c in committed for i in measured)
    last_receipt = window0
    latencies: list[list[float]] = [[] for _ in range(n)]
    in_cpu_window = [0] * n
    per_conn: dict[int, list[int]] = {}
    total_bytes = messages = 0
    closes: dict[int, int | None] = {}
    failed: set[int] = set()
    for r in clients:
        total_bytes += r["bytes"]
        messages += len(r["ids"])
        closes.update(r["closes"])
        failed.update(r["failed"])
        for conn, event_id, t in zip(r["conn"], r["ids"], r["times"], strict=True):
            k = server_of(conn, n)
            per_conn.setdefault(conn, []).append(event_id)
            if cpu["wall0"] <= t <= cpu["wall1"]:
                in_cpu_window[k] += 1
            if event_id in measured:
                latencies[k].append(t - committed[k][event_id])
                last_receipt = max(last_receipt, t)
    held = [0] * n  # connections each server had
    for conn in range(args.conns):
        if conn not in failed:
            held[server_of(conn, n)] += 1
    # Every connection must get every event once, in order: counted per server.
    duplicates, out_of_order, incomplete, unique = [0] * n, [0] * n, list(held), [0] * n
    for conn, ids in per_conn.items():
        k = server_of(conn, n)
        seen = set(ids)
        duplicates[k] += len(ids) - len(seen)
        out_of_order[k] += sum(1 for a, b in itertools.pairwise(ids) if b <= a)
        incomplete[k] -= ids == order and conn not in failed
        unique[k] += len(seen & measured)
    seconds = cpu["seconds"]
    workers = []
    for k in range(n):
        latencies[k].sort()
        server_cpu = cpu.get(f"server{k}", cpu["server"] if n == 1 else 0.0)
        workers.append(
            {
                "connected": held[k],
                "expected": len(measured) * held[k],
                "received": len(latencies[k]),
                "missing": len(measured) * held[k] - unique[k],
                "duplicates": duplicates[k],
                "out_of_order": out_of_order[k],
                "incomplete_streams": incomplete[k],
                **_latency(latencies[k]),
                "server_cores": server_cpu / seconds,
                "server_cpu_us_per_delivery": server_cpu / in_cpu_window[k] * 1e6
                if in_cpu_window[k]
                else 0.0,
                "rss_peak_mb": rss["peak"][k],
            }
        )
    everything = sorted(itertools.chain.from_iterable(latencies))
    delivered = sum(in_cpu_window)
    # Codes the server chose: 1013 is "too slow". Closes by the bench's own
    # stop (none received) do not count.
    dropped = sum(1 for code in closes.values() if code == 1013)
    other_closes = sum(1 for code in closes.values() if code is not None and code != 1013)
    writer, database = cpu.get("writer", 0.0), cpu.get("database", 0.0)
    return {
        "connected": sum(held),
        "events": len(order),
        "measured_events": len(measured),
        # Work done: deliveries of the measured events over the time from the
        # first one's commit to the last one's arrival anywhere.
        "delivered_per_s": len(everything) / (last_receipt - window0)
        if last_receipt > window0
        else 0.0,
        "expected": sum(w["expected"] for w in workers),
        "received": len(everything),
        "missing": sum(w["missing"] for w in workers),
        **_latency(everything),
        "dropped_1013": dropped,
        "other_closes": other_closes,
        "duplicates": sum(duplicates),
        "out_of_order": sum(out_of_order),
        "incomplete_streams": sum(incomplete),
        "message_bytes": total_bytes / messages if messages else 0.0,
        "server_cores": cpu["server"] / seconds,
        "clients_cores": cpu["clients"] / seconds,
        "writer_cores": writer / seconds,
        "database_cores": database / seconds,
        "machine_cores": cpu["machine"] / seconds,
        "other_cores": max(
            0.0, (cpu["machine"] - cpu["server"] - cpu["clients"] - writer - database) / seconds
        ),
        "server_cpu_us_per_delivery": cpu["server"] / delivered * 1e6 if delivered else 0.0,
        "database_cpu_us_per_delivery": database / delivered * 1e6 if delivered else 0.0,
        "commit_ms": statistics.median(a - b for _, a, b in commits[0]) * 1000,
        "rss_idle_mb": sum(rss["idle"]),
        "rss_connected_mb": sum(rss["connected"]),
        "rss_end_mb": sum(rss["end"]),
        "rss_peak_mb": sum(rss["peak"]),
        "busiest_others": cpu["busiest_others"],
        "workers": workers,
    }


# --- reporting -------------------------------------------------------------------

ROWS = [
    ("delivered messages/s", "delivered_per_s", True),
    ("latency p50, ms", "p50_ms", False),
    ("latency p90, ms", "p90_ms", False),
    ("latency p95, ms", "p95_ms", False),
    ("latency p99, ms", "p99_ms", False),
    ("latency max, ms", "max_ms", False),
    ("deliveries expected", "expected", False),
    ("deliveries received", "received", False),
    ("missing deliveries", "missing", False),
    ("dropped with 1013", "dropped_1013", False),
    ("other closes", "other_closes", False),
    ("duplicates / out of order", "dup_ooo", False),
    ("streams with a gap", "incomplete_streams", False),
    ("message size, bytes", "message_bytes", False),
    ("server CPU, cores", "server_cores", False),
    ("server CPU per delivery, us", "server_cpu_us_per_delivery", False),
    ("client processes' CPU, cores", "clients_cores", False),
    ("writer process CPU, cores", "writer_cores", False),
    ("PostgreSQL backends' CPU, cores", "database_cores", False),
    ("PostgreSQL CPU per delivery, us", "database_cpu_us_per_delivery", False),
    ("other processes' CPU, cores", "other_cores", False),
    ("server RSS idle / connected, MB", "rss_idle_connected", False),
    ("server RSS peak, MB", "rss_peak_mb", False),
]


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def summarise(runs: dict[str, list[Result]]) -> dict[str, Result]:
    """Medians of every figure over the runs; ratios are of medians."""
    out: dict[str, Result] = {}
    for side, results in runs.items():
        if not results:
            continue
        numeric = [k for k, v in results[0].items() if isinstance(v, int | float)]
        s: Result = {k: statistics.median(r[k] for r in results) for k in numeric}
        s["workers"] = [
            {k: statistics.median(r["workers"][w][k] for r in results) for k in worker}
            for w, worker in enumerate(results[0]["workers"])
        ]
        s["dup_ooo"] = f"{_fmt(s['duplicates'])} / {_fmt(s['out_of_order'])}"
        s["rss_idle_connected"] = f"{_fmt(s['rss_idle_mb'])} / {_fmt(s['rss_connected_mb'])}"
        s["all_delivered"] = [r["delivered_per_s"] for r in results]
        s["all_p99"] = [r["p99_ms"] for r in results]
        out[side] = s
    return out


def setup(args: argparse.Namespace) -> str:
    """The store and the servers, in words: for the report's header."""
    if args.store == "sqlite":
        store = "store: SQLite (a copy per run; each tail looks every 25 ms)"
    else:
        from sqlalchemy.engine import make_url

        server = make_url(args.pg_server).render_as_string()
        store = (
            f"store: PostgreSQL at {server} (a fresh database per run, dropped after it; "
            "commits reach the tails through LISTEN/NOTIFY)"
        )
    if args.workers == 1:
        return f"{store}; 1 web worker; floor: 1 bare process"
    return (
        f"{store}; {args.workers} web workers (`tidings serve --no-poller` each), "
        f"connection i on worker i mod {args.workers}; floor: {args.workers} bare "
        f"processes, each with the same share of the clients"
    )


def print_table(s: dict[str, Result], args: argparse.Namespace) -> None:
    t, f = s.get("tidings"), s.get("floor")
    print()
    print(
        f"Live push: {args.conns:,} websocket clients in {args.client_procs} processes, "
        f"{args.rate:g} events/s for {args.seconds:g} s (+{args.warmup:g} s warm-up), "
        f"every client's query matching every event; {os.cpu_count()} cores; "
        f"medians of {args.runs} run(s)"
    )
    print(setup(args))
    print(f"{'':34}  {'Tidings':>12}  {'floor':>12}  {'Tidings/floor':>13}")
    for label, key, ratio in ROWS:
        tv = t.get(key) if t else None
        fv = f.get(key) if f else None
        if key == "writer_cores" and t is None:
            continue
        if key.startswith("database_") and (t is None or args.store != "postgresql"):
            continue
        cells = [v if isinstance(v, str) else ("-" if v is None else _fmt(v)) for v in (tv, fv)]
        r = f"{tv / fv:.2f}x" if ratio and isinstance(tv, float) and fv else ""
        print(f"{label:34}  {cells[0]:>12}  {cells[1]:>12}  {r:>13}")
    for side, d in (("Tidings", t), ("floor", f)):
        if d:
            rates = ", ".join(f"{v:,.0f}" for v in d["all_delivered"])
            p99s = ", ".join(f"{v:,.0f}" for v in d["all_p99"])
            print(f"\n{side} runs: delivered/s [{rates}]; p99 ms [{p99s}]")
    if args.workers > 1:
        print_workers(s, args.workers)
    for side, d in (("Tidings", t), ("floor", f)):
        if d and d["other_cores"] > 0.15:
            print(f"\nWARNING: other processes used {d['other_cores']:.2f} cores during "
                  f"the {side} runs (median): figures are noisy")  # fmt: skip
    if t:
        print()
        if f:
            ratio = t["delivered_per_s"] / f["delivered_per_s"]
            verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
            print(f"Target throughput >= {TARGET_RATIO:g}x the floor: {ratio:.2f}x -> {verdict}")
        p99 = t["p99_ms"]
        verdict = "met" if p99 <= TARGET_P99_MS else "MISSED"
        print(f"Target p99 <= {TARGET_P99_MS:g} ms: {p99:.0f} ms -> {verdict}")
        print(f"Server memory (Tidings): peak RSS {t['rss_peak_mb']:.0f} MB, "
              f"{t['rss_idle_mb']:.0f} MB before the clients connected")  # fmt: skip


def print_workers(s: dict[str, Result], workers: int) -> None:
    """Each server's share: its clients' deliveries, latency and CPU."""
    print(f"\nPer server (connection i on server i mod {workers}; latency in ms):")
    head = ("clients", "expected", "received", "missing", "dup", "p50", "p95", "p99", "max")
    print(f"{'':18}" + "".join(f"{h:>10}" for h in head) + f"{'CPU cores':>11}{'us/deliv.':>11}")
    keys = ["connected", "expected", "received", "missing", "duplicates"]
    keys += ["p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cores", "server_cpu_us_per_delivery"]
    for side, name in (("tidings", "Tidings worker"), ("floor", "floor process")):
        for k, w in enumerate(s[side]["workers"] if side in s else []):
            cells = [_fmt(w[key]) for key in keys]
            print(
                f"{f'{name} {k + 1}':18}"
                + "".join(f"{c:>10}" for c in cells[:-2])
                + "".join(f"{c:>11}" for c in cells[-2:])
            )


def _brief(r: Result) -> str:
    others = "; ".join(f"{name} {cpu:.1f} CPU s" for name, cpu in r["busiest_others"])
    return (
        f"{r['delivered_per_s']:,.0f} delivered/s; latency p50 {r['p50_ms']:.0f} ms, "
        f"p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms; {r['missing']} missing, "
        f"{r['duplicates']} duplicates, {r['dropped_1013']} dropped (1013); "
        f"server {r['server_cores']:.2f} cores, "
        f"clients {r['clients_cores']:.2f}; peak RSS {r['rss_peak_mb']:.0f} MB"
        + (f"\n  busy meanwhile: {others}" if others else "")
    )


# --- the capacity search ----------------------------------------------------------


def unsustained(r: Result, args: argparse.Namespace) -> str:
    """Why a step's rate was not sustained, or "" when it was."""
    reasons = []
    if r["connected"] < args.conns:
        reasons.append(f"{args.conns - r['connected']} connections failed")
    if not r["received"]:
        reasons.append("nothing received")
    elif r["p99_ms"] > CAPACITY_P99_MS:
        reasons.append(f"p99 {r['p99_ms']:.0f} ms")
    if r["missing"] or r["incomplete_streams"]:
        reasons.append(
            f"{r['missing']} deliveries lost, {r['incomplete_streams']} streams with a gap"
        )
    if r["duplicates"] or r["out_of_order"]:
        reasons.append(f"{r['duplicates']} duplicates, {r['out_of_order']} out of order")
    if r["dropped_1013"] or r["other_closes"]:
        reasons.append(f"{r['dropped_1013'] + r['other_closes']} connections closed")
    if r["commits_per_s"] < COMMIT_PACE * r["rate"]:
        reasons.append(f"commits fell behind ({r['commits_per_s']:.1f}/s)")
    return "; ".join(reasons)


def _noise(r: Result) -> str:
    others = ", ".join(f"{name} {cpu:.1f} CPU s" for name, cpu in r["busiest_others"])
    return f"NOISY: other processes used {r['other_cores']:.2f} cores" + (
        f" ({others})" if others else ""
    )


def _step_line(r: Result) -> str:
    verdict = f"FAILED ({r['failed_because']})" if r["failed_because"] else "sustained"
    return (
        f"{r['rate']:>7g} events/s: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
        f"max {r['max_ms']:.0f} ms; {r['delivered_per_s']:,.0f} delivered/s; commits "
        f"{r['commits_per_s']:.1f}/s; server {r['server_cores']:.2f} cores, clients "
        f"{r['clients_cores']:.2f}, others {r['other_cores']:.2f} -> {verdict}"
        + (f"  {_noise(r)}" if r["noisy"] else "")
    )


def find_capacity(side: str, args: argparse.Namespace, template: Template) -> Result:
    """One side's search for the highest rate it sustains (see the module's
    docstring): `sustained` (0: none), `failed` (the lowest rate that failed;
    None: none did) and every step's figures in order."""
    _quiet(args)
    deadline = time.monotonic() + args.budget
    steps: list[Result] = []
    sustained, failed = 0.0, math.inf
    rate = START_RATE
    processes: Side | None = None
    stopped = ""
    try:
        while True:
            began = time.monotonic()
            if processes is None:  # at the start, and after a failed step
                processes = Side(side, args, template)
                processes.start()
            r = processes.step(rate)
            r["failed_because"] = unsustained(r, args)
            r["noisy"] = r["other_cores"] > args.max_other
            steps.append(r)
            print(f"  {_label(side):8}{_step_line(r)}", flush=True)
            if r["failed_because"]:
                failed = rate
                processes.close()  # a backlog or a closed connection must not spill over
                processes = None
            else:
                sustained = rate
            if failed == math.inf:
                rate *= 2
            elif sustained == 0:
                rate = failed / 2
                if rate < MIN_RATE:
                    break
            elif failed / sustained <= RESOLUTION:
                break
            else:
                rate = float(f"{(sustained + failed) / 2:.3g}")
                if rate in (sustained, failed):
                    break
            if time.monotonic() + (time.monotonic() - began) > deadline:
                stopped = f"--budget of {args.budget:g} s reached"
                break
    finally:
        if processes is not None:
            processes.close()
    return {
        "side": side,
        "sustained": sustained,
        "failed": None if failed == math.inf else failed,
        "stopped": stopped,
        "steps": steps,
    }


def _label(side: str) -> str:
    return "Tidings" if side == "tidings" else side


def print_capacity(runs: list[dict[str, Result]], args: argparse.Namespace) -> None:
    """Each side's sustained rate (the median over the runs), the step above
    it that failed and why, and the ratio; steps measured on a busy machine
    are named."""
    print()
    print(
        f"Capacity: the highest event rate sustained with p99 <= {CAPACITY_P99_MS:g} ms from "
        f"commit to client and nothing lost; {args.conns:,} websocket clients, every query "
        f"matching every event; steps of {args.seconds:g} s (+{args.warmup:g} s warm-up)"
        + (f"; medians of {len(runs)} runs" if len(runs) > 1 else "")
    )
    print(setup(args))
    head = ("sustained events/s", "delivered/s", "p50 / p99, ms", "steps (noisy)")
    print(f"{'':10}" + "".join(f"{h:>20}" for h in head) + "  first rate above that failed")
    medians: dict[str, float] = {}
    for side in runs[0]:
        found = [run[side] for run in runs]
        medians[side] = statistics.median(f["sustained"] for f in found)
        for k, f in enumerate(found):
            at = [r for r in f["steps"] if r["rate"] == f["sustained"] and not r["failed_because"]]
            above = [r for r in f["steps"] if r["rate"] == f["failed"]]
            cells = [
                f"{f['sustained']:g}" if f["sustained"] else "none",
                f"{at[-1]['delivered_per_s']:,.0f}" if at else "-",
                f"{at[-1]['p50_ms']:.0f} / {at[-1]['p99_ms']:.0f}" if at else "-",
                f"{len(f['steps'])} ({sum(r['noisy'] for r in f['steps'])})",
            ]
            fail = f"{f['failed']:g}: {above[-1]['failed_because']}" if above else "none failed"
            if f["stopped"]:
                fail += f" ({f['stopped']})"
            name = _label(side) + (f" {k + 1}" if len(runs) > 1 else "")
            print(f"{name:10}" + "".join(f"{c:>20}" for c in cells) + f"  {fail}")
    if len(runs) > 1:
        for side, median in medians.items():
            print(f"{_label(side)}, median of the runs: {median:g} events/s")
    if "tidings" in medians and "floor" in medians:
        ours, floor = medians["tidings"], medians["floor"]
        ratio = f"{ours / floor:.2f}x" if floor else "-"
        print(f"\nSustained rate, Tidings / floor: {ours:g} / {floor:g} events/s = {ratio}")
    for run in runs:
        for side, f in run.items():
            deciding = [r for r in f["steps"] if r["rate"] in (f["sustained"], f["failed"])]
            noisy = [r for r in deciding if r["noisy"]]
            for r in noisy:
                print(
                    f"{_label(side)}: the step at {r['rate']:g} events/s that decided its "
                    f"rate was measured on a busy machine: {_noise(r)}"
                )
            if not f["sustained"] and f["steps"]:
                lowest = min(r["rate"] for r in f["steps"])
                print(f"{_label(side)}: no rate sustained; every step failed, down to {lowest:g}/s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000, help="websocket clients")
    parser.add_argument("--client-procs", type=int, default=4, help="processes holding them")
    parser.add_argument(
        "--rate",
        type=float,
        help="fixed-rate mode: this many events per second, --runs runs (default: the "
        "capacity search)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="measured seconds per step (default 5); with --rate, per run (20)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds of events not counted in the latency, per step (default 1) or run (2)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        help="seconds to wait after the last commit (default 1; 2 with --rate)",
    )
    parser.add_argument(
        "--runs", type=int, help="searches per side (default 1); with --rate, runs per side (3)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=120.0,
        help="seconds per side and search: no step starts that would likely end after it "
        "(default %(default)g)",
    )
    parser.add_argument("--sides", default="tidings,floor", help="tidings,floor or one of them")
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the store the workers and the writer share (default: sqlite)",
    )
    parser.add_argument(
        "--pg-server",
        default=PG_SERVER,
        help="for --store postgresql: the server, as a SQLAlchemy URL to a database there "
        "(each run gets a fresh database, dropped after it; default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`tidings serve --no-poller` processes on the same store, the clients split "
        "evenly across them (the floor: as many bare processes); default 1",
    )
    parser.add_argument(
        "--auth",
        choices=("tokens", "setup"),
        default="tokens",
        help="tokens: member users, one API token per client (default); "
        "setup: no accounts, loopback clients let in",
    )
    parser.add_argument("--users", type=int, default=100, help="member users sharing the tokens")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="before each side, wait up to this many seconds for an idle machine "
        "(default 20; 120 with --rate; 0: don't)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.15,
        help="a step during which other processes used more cores than this is marked "
        "noisy; with --rate such a run is repeated (default %(default)g)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="with --rate: repeats allowed per side and run"
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--profile", type=Path, help="run the servers under cProfile, into DIR")
    parser.add_argument("--role", choices=("clients", "writer"), help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "clients":
        tokens = json.loads(Path(args.tokens).read_text()) if args.tokens else []
        return asyncio.run(_clients_main(args, tokens))
    if args.role == "writer":
        return _writer_main(args)

    for name, (searching, fixed) in MODE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, fixed if args.rate else searching)
    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    if unknown := set(sides) - {"tidings", "floor"}:
        parser.error(f"unknown side(s): {', '.join(sorted(unknown))}")
    if not 1 <= args.workers <= args.conns:
        parser.error("--workers: from 1 to --conns")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate: more than 0")
    auth = f"{args.users} member users, one API token per client"
    print(
        f"{args.conns} clients in {args.client_procs} processes; auth: {args.auth}"
        + (f" ({auth})" if args.auth == "tokens" else " (no accounts: setup mode)")
    )
    print(setup(args))
    print(
        environment(
            ", ".join(f"{n} {package_version(n)}" for n in ("uvicorn", "starlette", "websockets"))
        )
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-live-template-") as template_name:
        directory = Path(template_name)
        if "tidings" in sides:
            template = make_template(args, directory)
        else:
            template = Template(directory, store_url="")  # the floor has no store
        try:
            tokens = _tidings_template(args, template) if "tidings" in sides else []
            (directory / "tokens.json").write_text(json.dumps(tokens))
            if args.rate:
                out = run_fixed_rate(args, sides, template)
            else:
                out = run_capacity(args, sides, template)
        finally:
            drop_store(template, template.store_url)
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def run_capacity(args: argparse.Namespace, sides: list[str], template: Template) -> Result:
    """The capacity search, `--runs` times per side, sides interleaved."""
    runs: list[dict[str, Result]] = []
    for run in range(1, args.runs + 1):
        runs.append({})
        for side in sides:
            print(f"\nrun {run}/{args.runs}, {_label(side)}: steps", flush=True)
            runs[-1][side] = find_capacity(side, args, template)
    print_capacity(runs, args)
    return {"mode": "capacity", "runs": runs}


def run_fixed_rate(args: argparse.Namespace, sides: list[str], template: Template) -> Result:
    """`--runs` runs per side at `--rate`, sides interleaved; a run during which
    other processes were busy is repeated (`--retries`)."""
    runs: dict[str, list[Result]] = {side: [] for side in sides}
    repeated = dict.fromkeys(sides, 0)
    for run in range(1, args.runs + 1):
        for side in sides:  # interleaved, so drift hits both sides alike
            for attempt in range(args.retries + 1):
                result = run_side(side, args, template)
                print(f"run {run}/{args.runs} {side}: {_brief(result)}", flush=True)
                other = result["other_cores"]
                if other <= args.max_other or attempt == args.retries:
                    break
                repeated[side] += 1
                print(f"  other processes used {other:.2f} cores: repeating")
            runs[side].append(result)
    summary = summarise(runs)
    print_table(summary, args)
    if any(repeated.values()):
        print(f"\nRuns repeated because other processes were busy: {repeated}")
    return {"mode": "fixed", "summary": summary, "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
