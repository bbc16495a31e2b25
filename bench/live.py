"""Live push: 1,000 websocket clients on `tidings serve`, against a bare broadcast.

    python -m bench.live                          # 1,000 clients, 3 runs x 20 s (make bench)
    python -m bench.live --conns 200 --seconds 5 --runs 1     # a quick look
    python -m bench.live --store postgresql --workers 2        # through LISTEN/NOTIFY (issue 13)

Each run measures two sides in turn, each with fresh servers and fresh
client processes:

- Tidings: `--workers` real `tidings serve --no-poller` processes (uvicorn,
  websockets-sansio; one by default) on a fresh store with four sources: a
  copy of a SQLite file, or with `--store postgresql` a database made for the
  run on `--pg-server` (from a template made once) and dropped after it. A
  writer process commits 20 events/s with `Store.record_poll`, as `tidings
  poller` would; each server learns of them through its EventTail and pushes
  each to every subscribed client. On SQLite the tail looks every 25 ms; on
  PostgreSQL each commit NOTIFYs every worker, whose tail otherwise looks only
  every second. Every client has its own query, and every query matches every
  event.
- the floor (`bench.broadcast_floor`): a bare Starlette app under the same
  uvicorn that sends each message to every connected client as it is made,
  20 per second, with no store, filter, queue or task per client; as many
  processes as there are workers, each with its own share of the clients.

The same client processes (several, each holding a share of the 1,000
websocket connections through `websockets`' sans-I/O client protocol on a
bare asyncio Protocol, so that the load generator stays cheap) subscribe
before the first event and note the arrival time of each event message.
Connection i goes to server i mod `--workers`, so each server has an even
share. Latency is arrival time minus commit time: the writer takes
`time.time()` right after each commit and records it per event id (a floor
process takes it just before each of its fan-outs), and the bench joins the
two by id afterwards. The first `--warmup` seconds of events are left out of
the figures, which are given overall and, with several servers, per server.

Clients authenticate as `tidings` users do: 100 member users of group
`staff` (the sources' audience) with one API token per client, sent as
`Authorization: Bearer` on the handshake, so every delivery passes a real
visibility check (`--auth setup`: no accounts, loopback clients let in).
Two cores are shared by the servers, the clients, PostgreSQL and anything
else running, so each side waits for a quiet machine first (`--wait-quiet`)
and a run during which other processes used more than `--max-other` cores is
repeated (`--retries`); the report says how often. `--profile DIR` runs the
servers under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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
    """Everything one client process received: one row per event message."""

    def __init__(self) -> None:
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
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop", or EOF
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
    """Commits `--count` events at `--rate`, one transaction each, once told to
    start; writes `[event id, time after commit, time before]` per event, says
    "done", and keeps its connection until told to exit (on PostgreSQL the
    bench counts the CPU of the server process behind it)."""
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
    batches = []
    for n in range(1, args.count + 1):  # sanitised before the clock starts
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
    sys.stdin.readline()
    cpu0 = time.process_time()
    rows: list[tuple[int, float, float]] = []
    start = time.monotonic()
    for n, (source, items) in enumerate(batches):
        time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
        before = time.time()
        [event_id] = store.record_poll(
            source, items, state=None, now=datetime.now(UTC), next_poll_at=later
        )
        rows.append((event_id, time.time(), before))
    cpu = time.process_time() - cpu0
    Path(args.out).write_text(json.dumps({"cpu": cpu, "commits": rows}))
    print("done", flush=True)
    sys.stdin.readline()
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


def run_side(side: str, args: argparse.Namespace, template: Template) -> Result:
    """One side, one run: fresh servers (`--workers` of them), fresh client
    processes, fresh data."""
    if args.wait_quiet > 0:
        waited = _wait_for_quiet(args.wait_quiet)
        if waited > 2.5:
            print(f"  (waited {waited:.0f} s for the machine to be quiet)", flush=True)
    env = {
        **os.environ,
        "TIDINGS_DISABLE_PLUGINS": "1",
        # The code next to this file, whatever is installed.
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, sys.path)]),
    }
    count = round((args.warmup + args.seconds) * args.rate)
    with tempfile.TemporaryDirectory(prefix=f"bench-live-{side}-") as tmp_name:
        tmp = Path(tmp_name)
        ports: list[int] = []
        while len(ports) < args.workers:
            if (port := _free_port()) not in ports:
                ports.append(port)
        logs = [tmp / f"server{k}.log" for k in range(args.workers)]
        store_url = config = None
        if side == "tidings":
            store_url = fresh_store(template, tmp, next(_RUNS))
            config = _write_config(tmp, ports[0], store_url)
        servers: list[subprocess.Popen[bytes]] = []
        clients: list[subprocess.Popen[str]] = []
        writer: subprocess.Popen[str] | None = None
        profiled = len(list(args.profile.glob(side + "-*"))) if args.profile else 0
        try:
            for port, log in zip(ports, logs, strict=True):
                if config is not None:
                    cmd = ["-m", "aggregator.cli", "--log-level", "WARNING", "serve",
                           "--config", str(config), "--no-poller", "--port", str(port)]  # fmt: skip
                else:
                    cmd = ["-m", "bench.broadcast_floor", "--port", str(port)]
                if args.profile:  # it slows the server: for finding hot spots, not for figures
                    args.profile.mkdir(parents=True, exist_ok=True)
                    out = args.profile / f"{side}-{profiled + len(servers)}.prof"
                    cmd = ["-m", "cProfile", "-o", str(out), *cmd]
                with log.open("wb") as log_file:
                    server = subprocess.Popen(
                        [sys.executable, *cmd], cwd=tmp, stdout=log_file,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    )  # fmt: skip
                servers.append(server)
            for port, server, log in zip(ports, servers, logs, strict=True):
                _wait_healthy(port, server, log)
            rss_idle = [_rss_mb(s.pid) for s in servers]
            per = -(-args.conns // args.client_procs)
            for k in range(args.client_procs):
                first, n = k * per, min(per, args.conns - k * per)
                if n <= 0:
                    break
                clients.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.live",
                            "--role",
                            "clients",
                            "--ports",
                            ",".join(map(str, ports)),
                            "--first",
                            str(first),
                            "--count",
                            str(n),
                            "--tokens",
                            str(template.directory / "tokens.json"),
                            "--out",
                            str(tmp / f"clients{k}.json"),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
            for proc in clients:
                assert proc.stdout is not None
                line = proc.stdout.readline().split(maxsplit=3)
                if not line or line[0] != "ready":
                    raise SystemExit(f"a client process failed to start ({line})")
                if int(line[2]):
                    print(f"  {line[2]} connections failed: {' '.join(line[3:])}", flush=True)
            time.sleep(0.5)  # let the last subscriptions settle
            rss_connected = [_rss_mb(s.pid) for s in servers]
            trees = [_descendants(s.pid) for s in servers]
            groups = {
                "server": [p for tree in trees for p in tree],
                **{f"server{k}": tree for k, tree in enumerate(trees)},
                "clients": [p.pid for p in clients],
            }
            if config is not None and store_url is not None:
                commits_file = tmp / "commits.json"
                writer = subprocess.Popen(
                    [sys.executable, "-m", "bench.live", "--role", "writer",
                     "--config", str(config), "--rate", str(args.rate), "--count", str(count),
                     "--out", str(commits_file)],
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert writer.stdin is not None and writer.stdout is not None
                if writer.stdout.readline().strip() != "ready":
                    raise SystemExit("the writer failed to start")
                cpu = _Cpu(groups)
                writer.stdin.write("go\n")
                writer.stdin.flush()
                if writer.stdout.readline().strip() != "done":
                    raise SystemExit(f"the writer failed (exit {writer.wait(60)})")
                # Its connection is still open, as are the servers'.
                figures = cpu.stop({"database": _backends(template, store_url)})
                writer.stdin.write("exit\n")
                writer.stdin.flush()
                if writer.wait(60) != 0:
                    raise SystemExit(f"the writer failed (exit {writer.returncode})")
                written = json.loads(commits_file.read_text())
                figures["writer"] = written["cpu"]
                commits = [[tuple(r) for r in written["commits"]]] * len(servers)
            else:
                bases = [f"http://127.0.0.1:{port}" for port in ports]
                cpu = _Cpu(groups)
                for base in bases:
                    _get(f"{base}/produce?rate={args.rate}&count={count}", method="POST")
                bodies: list[Any] = [None] * len(bases)
                while not all(body and body["done"] for body in bodies):
                    time.sleep(0.2)
                    bodies = [json.loads(_get(f"{base}/produced")) for base in bases]
                figures = cpu.stop()
                commits = [[(i, t, t) for i, t in body["events"]] for body in bodies]
            time.sleep(args.drain)  # what is still on its way
            rss_peak = [_peak_rss_mb(s.pid) for s in servers]
            rss_end = [_rss_mb(s.pid) for s in servers]
            results = []
            for proc in clients:
                assert proc.stdin is not None
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            for k, proc in enumerate(clients):
                if proc.wait(60) != 0:
                    raise SystemExit(f"client process {k} failed (exit {proc.returncode})")
                results.append(_read_client_result(tmp / f"clients{k}.json"))
        finally:
            for proc in [*clients, *([writer] if writer else [])]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for server in servers:
                # uvicorn re-raises the signal it stopped on; cProfile writes its
                # file on the KeyboardInterrupt that SIGINT then becomes.
                _stop(server, signal.SIGINT if args.profile else signal.SIGTERM)
            if store_url is not None:
                drop_store(template, store_url)
        return _figures(
            args,
            commits=commits,
            clients=results,
            cpu=figures,
            rss={"idle": rss_idle, "connected": rss_connected, "end": rss_end, "peak": rss_peak},
        )


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000, help="websocket clients")
    parser.add_argument("--client-procs", type=int, default=4, help="processes holding them")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of events not counted")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait after the last")
    parser.add_argument("--runs", type=int, default=3)
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
        default=120,
        help="before each side, wait up to this many seconds for an idle machine (0: don't)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.15,
        help="repeat a side's run when other processes used more cores than this meanwhile",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats allowed per side and run")
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

    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    if unknown := set(sides) - {"tidings", "floor"}:
        parser.error(f"unknown side(s): {', '.join(sorted(unknown))}")
    if not 1 <= args.workers <= args.conns:
        parser.error("--workers: from 1 to --conns")
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
    runs: dict[str, list[Result]] = {side: [] for side in sides}
    repeated = dict.fromkeys(sides, 0)
    with tempfile.TemporaryDirectory(prefix="bench-live-template-") as template_name:
        directory = Path(template_name)
        if "tidings" in sides:
            template = make_template(args, directory)
        else:
            template = Template(directory, store_url="")  # the floor has no store
        try:
            tokens = _tidings_template(args, template) if "tidings" in sides else []
            (directory / "tokens.json").write_text(json.dumps(tokens))
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
        finally:
            drop_store(template, template.store_url)
    summary = summarise(runs)
    print_table(summary, args)
    if any(repeated.values()):
        print(f"\nRuns repeated because other processes were busy: {repeated}")
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
