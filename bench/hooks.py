"""Webhooks: signed deliveries into `tidings serve`, out to 100 websocket subscribers.

    python -m bench.hooks                                   # the issue's figures (1-2 min)
    python -m bench.hooks --deliveries 200 --burst 600      # a quick look

Two sides, each a fresh server under the same uvicorn (h11, websockets-sansio),
driven by the same client in this process:

- Tidings: a real `tidings serve` (its poller on, as shipped: its live tail
  then looks for new events only once a second on its own, so what reaches
  subscribers sooner was pushed by the delivery's commit) on a fresh SQLite
  store with one `webhook` source (GitHub signature, delivery and event
  headers, a field mapping) whose audience is group `staff`. 100 subscribers,
  each a member user with an API token on the handshake, subscribe to
  `source:bench`.
- the floor (`--role floor`): a bare Starlette endpoint that reads the body
  and answers 204: no signature, store, sanitiser or fan-out. What is left
  is uvicorn's and Starlette's cost of one POST, which Tidings cannot go below.

Phases, the same requests on both sides (GitHub "issues" payloads of about
2 KB, each signed with X-Hub-Signature-256 and a fresh X-GitHub-Delivery,
built before the clock starts):

1. latency: `--deliveries` POSTs, one at a time, paced at `--rate`/s. For
   Tidings, latency is the arrival of the event at a subscriber minus the
   moment its POST started (one sample per delivery and subscriber), and
   "last" is the arrival at the last of the subscribers; the floor's figure is
   its POST round trip, the least any delivery can take.
2. throughput: `--burst` POSTs from `--senders` keep-alive connections, each
   sending its next as soon as its last was answered: deliveries answered per
   second, once while the 100 subscribers get every event (the fan-out is then
   most of the server's work), once with nobody subscribed (ingest alone: the
   issue's target). The floor's figure is its bare POST rate.

Server CPU is read from /proc for the server process (all its threads); the
client's is this process's, to show the load generator is not the limit.
Two cores are shared by both, so a busy machine shows in the figures: the
environment line says how busy it was, and `--wait-quiet` waits for calm.

The HTTP client is a few lines on asyncio streams rather than httpx2, so the
load generator stays cheap enough not to be what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.frames import Frame, Opcode

from bench.feeds import _cpu_ticks, environment, package_version
from bench.live import _free_port, _wait_for_quiet, _wait_healthy

TARGET_P99_MS = 100.0  # the issue: p99 POST -> subscriber latency at most 100 ms
TARGET_RATE = 500.0  # ... and at least 500 deliveries/s ingested on this machine
AWARE_S = 1.0  # ... every subscriber aware within a second
WARMUP = 20  # deliveries sent before the clock starts (connections, caches)
ROOT = Path(__file__).resolve().parent.parent
SOURCE = "bench"
SECRET = "bench-webhook-secret"
SECRET_ENV = "BENCH_HOOK_SECRET"
_EVENT_ID = re.compile(rb'^\{"type":"event","stream":"[^"]*","event":\{"id":(\d+)')
Result = dict[str, Any]


# --- what is sent -------------------------------------------------------------------


def payload(n: int) -> bytes:
    """Delivery `n`: a GitHub "issues" event of about 2 KB."""
    words = " ".join(f"w{(n * 7 + i) % 97}" for i in range(120))
    user = {"login": f"dev{n % 17}", "id": 1000 + n % 17, "type": "User",
            "html_url": f"https://github.example/dev{n % 17}"}  # fmt: skip
    return json.dumps(
        {
            "action": "opened",
            "issue": {
                "id": 500_000 + n,
                "number": n,
                "title": f"Build {n} fails on the release branch",
                "body": f"The nightly build {n} failed. {words}\n\n{words}",
                "html_url": f"https://github.example/acme/app/issues/{n}",
                "user": user,
                "labels": [{"name": "ci"}, {"name": "bug"}],
                "state": "open",
                "created_at": "2026-11-02T09:30:00Z",
            },
            "repository": {
                "full_name": "acme/app",
                "html_url": "https://github.example/acme/app",
                "description": words,
            },
            "sender": user,
        }
    ).encode()


def request(port: int, n: int) -> bytes:
    """The whole HTTP/1.1 request for delivery `n`, signed as GitHub signs."""
    body = payload(n)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST /hooks/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-GitHub-Event: issues\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"X-Hub-Signature-256: sha256={signature}\r\nUser-Agent: GitHub-Hookshot/bench\r\n\r\n"
    )
    return head.encode() + body


class Poster:
    """One keep-alive HTTP/1.1 connection sending prepared requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Poster:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- the subscribers ----------------------------------------------------------------------


@dataclass
class Arrivals:
    """Every event message the subscribers received: (event id, time.time())."""

    expected: int = 0
    seen: list[tuple[int, float]] = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event_id: int, when: float) -> None:
        self.seen.append((event_id, when))
        if self.expected and len(self.seen) >= self.expected:
            self.complete.set()


class Subscriber(asyncio.Protocol):
    """One websocket: websockets' sans-I/O protocol on an asyncio Protocol,
    reading only each message's event id (a regex), as bench.live does."""

    def __init__(self, url: str, token: str, arrivals: Arrivals) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.token = token
        self.arrivals = arrivals
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        handshake = self.ws.connect()
        handshake.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(handshake)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.ws.receive_data(data)
        for message in self.ws.events_received():
            if not isinstance(message, Frame):  # the handshake's answer
                if self.ws.handshake_exc is not None:
                    self._fail(self.ws.handshake_exc)
                    continue
                hello = {"type": "subscribe", "stream": "s", "query": f"source:{SOURCE}"}
                self.ws.send_text(json.dumps({**hello, "cursor": None}).encode())
            elif message.opcode is Opcode.TEXT:
                if match := _EVENT_ID.match(message.data):
                    self.arrivals.add(int(match[1]), now)
                elif not self.subscribed.done() and b'"subscribed"' in message.data:
                    self.subscribed.set_result(None)
                elif b'"error"' in message.data:
                    self._fail(RuntimeError(bytes(message.data).decode()))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("a subscriber's connection was lost"))

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _fail(self, exc: BaseException) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(exc)


async def subscribe_all(port: int, tokens: Sequence[str], arrivals: Arrivals) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    subs = [Subscriber(f"ws://127.0.0.1:{port}/ws", t, arrivals) for t in tokens]
    for sub in subs:
        await loop.create_connection(lambda sub=sub: sub, "127.0.0.1", port)  # type: ignore[misc]
    await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in subs)), 60)
    return subs


# --- the phases -------------------------------------------------------------------------------


async def paced(
    port: int, requests: Sequence[bytes], rate: float
) -> list[tuple[float, float, int]]:
    """One connection, one request at a time at `rate`/s: per request its
    start and end (time.time()) and the first new event id it reports (0: none)."""
    poster = await Poster(port).open()
    loop = asyncio.get_running_loop()
    rows = []
    start = loop.time()
    try:
        for n, raw in enumerate(requests):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            began = time.time()
            status, body = await poster.send(raw)
            ended = time.time()
            if status not in (200, 204):
                raise SystemExit(f"delivery {n} got {status}: {body[:300]!r}")
            ids = json.loads(body).get("events", []) if body else []
            rows.append((began, ended, ids[0] if ids else 0))
    finally:
        poster.close()
    return rows


async def burst(port: int, requests: Sequence[bytes], senders: int, pid: int) -> Result:
    """`requests` from `senders` connections, closed loop: deliveries answered
    per second, answers that were not a success, server CPU per delivery."""
    posters = [await Poster(port).open() for _ in range(senders)]
    queue: Iterator[bytes] = iter(requests)
    failed = 0

    async def sender(poster: Poster) -> None:
        nonlocal failed
        for raw in queue:  # shared: each sender takes the next one left
            status, _ = await poster.send(raw)
            failed += status not in (200, 204)

    ticks = _server_ticks(pid)
    own = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(sender(p) for p in posters))
    finally:
        for p in posters:
            p.close()
    seconds = time.perf_counter() - started
    cpu = (_server_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
    n = len(requests)
    return {
        "rate": n / seconds,
        "failed": failed,
        "cpu_ms": 1000 * cpu / n,
        "client_cpu_ms": 1000 * (time.process_time() - own) / n,  # senders and subscribers
    }


def _server_ticks(pid: int) -> int:
    return sum(_cpu_ticks([pid]).values())


def run_side(side: str, args: argparse.Namespace, tmp: Path, tokens: list[str]) -> Result:
    """One side: a fresh server, the phases, the server stopped."""
    port = _free_port()
    log = tmp / f"{side}.log"
    env = {
        **os.environ,
        "TIDINGS_DISABLE_PLUGINS": "1",
        SECRET_ENV: SECRET,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, sys.path)]),
    }
    if side == "tidings":
        cmd = ["-m", "aggregator.cli", "--log-level", "WARNING", "serve",
               "--config", str(tmp / "config.toml"), "--port", str(port)]  # fmt: skip
    else:
        cmd = ["-m", "bench.hooks", "--role", "floor", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, *cmd], cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        _wait_healthy(port, server, log)
        return asyncio.run(drive(port, server.pid, args, tokens if side == "tidings" else []))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def drive(port: int, pid: int, args: argparse.Namespace, tokens: list[str]) -> Result:
    """The phases against the server on `port` (process `pid`); with
    `tokens`, a subscriber each receives what is stored."""
    numbers = itertools.count(1)
    warmup = [request(port, next(numbers)) for _ in range(WARMUP)]
    measured = [request(port, next(numbers)) for _ in range(args.deliveries)]
    watched = [request(port, next(numbers)) for _ in range(args.burst)]
    alone = [request(port, next(numbers)) for _ in range(args.burst)]
    arrivals = Arrivals(expected=len(tokens) * (WARMUP + args.deliveries))
    subs = await subscribe_all(port, tokens, arrivals) if tokens else []
    try:
        await paced(port, warmup, args.rate)
        ticks0 = _server_ticks(pid)
        rows = await paced(port, measured, args.rate)
        ticks_paced = _server_ticks(pid) - ticks0
        if subs:  # what is still on its way; what never comes counts as lost
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrivals.complete.wait(), 30)
        seen = list(arrivals.seen)
        watched_run = await burst(port, watched, args.senders, pid)
    finally:
        for sub in subs:
            if sub.transport is not None:
                sub.transport.close()
    alone_run = await burst(port, alone, args.senders, pid)
    tck = os.sysconf("SC_CLK_TCK")
    return {
        "rows": rows,
        "arrivals": seen,
        "subscribers": len(subs),
        "cpu_ms_per_delivery": 1000 * ticks_paced / tck / max(1, len(rows)),
        "watched": watched_run,
        "alone": alone_run,
    }


# --- the floor ----------------------------------------------------------------------------


def floor_main(port: int) -> int:
    """A bare endpoint under the same uvicorn as `tidings serve`: reads the body, answers 204."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/hooks/{source_id}", hook, methods=["POST"]), Route("/healthz", healthz)]
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning")
    return 0


# --- the Tidings side's store -------------------------------------------------------------


def write_config(directory: Path) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n'
        f'[store]\nurl = "sqlite:///{directory}/tidings.db"\n'
        f"[[sources]]\n"
        f'id = "{SOURCE}"\nkind = "webhook"\nsignature = "github"\n'
        f'secret = "env:{SECRET_ENV}"\naudience = ["staff"]\ntags = ["ci"]\n'
        f'event_header = "X-GitHub-Event"\ndelivery_header = "X-GitHub-Delivery"\n'
        f"[sources.fields]\n"
        f'id = "issue.id"\n'
        f'title = {{template = "{{sender.login}} {{action}} #{{issue.number}}: {{issue.title}}"}}\n'
        f'summary = "issue.body"\nurl = "issue.html_url"\nauthor = "sender.login"\n'
        f'author_url = "sender.html_url"\npublished = "issue.created_at"\n'
        f'tags = "issue.labels[].name"\nobject_type = {{value = "Issue"}}\n'
    )
    return path


def make_store(directory: Path, subscribers: int) -> list[str]:
    """The source, one member user of `staff` per subscriber, a token each."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from datetime import UTC, datetime

    from aggregator.config import load_config
    from aggregator.store import Store

    config = load_config(write_config(directory))
    store = Store(config.store_url)
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now, config_file=str(config.path))
    tokens = []
    for i in range(subscribers):
        name = f"bench{i:03d}"
        store.people.create_user(name, password_hash=None, groups=["staff"], actor="bench", now=now)
        tokens.append(store.people.create_token(name, "ws", actor="bench", now=now))
    store.close()
    return tokens


# --- figures ----------------------------------------------------------------------------------


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def figures(result: Result) -> Result:
    rows = result["rows"]
    rtt = [(end - began) * 1000 for began, end, _ in rows]
    out: Result = {
        "rtt_p50": _pct(rtt, 50),
        "rtt_p99": _pct(rtt, 99),
        "cpu_ms": result["cpu_ms_per_delivery"],
        "watched": result["watched"],
        "alone": result["alone"],
    }
    subs = result["subscribers"]
    if not subs:
        return out
    sent = {event_id: began for began, _, event_id in rows if event_id}
    per_event: dict[int, list[float]] = {}
    for event_id, when in result["arrivals"]:
        if event_id in sent:
            per_event.setdefault(event_id, []).append((when - sent[event_id]) * 1000)
    samples = [ms for got in per_event.values() for ms in got]
    last = [max(got) for got in per_event.values() if len(got) == subs]
    out.update(
        latency_p50=_pct(samples, 50),
        latency_p99=_pct(samples, 99),
        latency_max=max(samples, default=float("nan")),
        last_p99=_pct(last, 99),
        received=len(samples),
        expected=len(sent) * subs,
        unstored=len(rows) - len(sent),
    )
    return out


def _row(label: str, tidings: float, floor: float | None = None, fmt: str = ".1f") -> str:
    line = f"{label:38}{tidings:12{fmt}}"
    if floor is not None:
        line += f"{floor:12{fmt}}{tidings / floor:9.2f}"
    return line


def report(tidings: Result, floor: Result, args: argparse.Namespace) -> None:
    print(
        f"\nlatency: {args.deliveries} deliveries at {args.rate:g}/s, one at a time; "
        f"{tidings['received']:,} of {tidings['expected']:,} event messages received "
        f"({tidings['unstored']} deliveries stored nothing)"
    )
    print(f"{'':38}{'tidings':>12}{'floor':>12}{'ratio':>9}")
    print(_row("POST -> subscriber p50 (ms)", tidings["latency_p50"], floor["rtt_p50"]))
    print(_row("POST -> subscriber p99 (ms)", tidings["latency_p99"], floor["rtt_p99"]))
    print(_row("  ... to the last subscriber, p99", tidings["last_p99"]))
    print(_row("  ... worst (ms)", tidings["latency_max"]))
    print(_row("POST answered p50 (ms)", tidings["rtt_p50"], floor["rtt_p50"]))
    print(_row("server CPU per delivery (ms)", tidings["cpu_ms"], floor["cpu_ms"], ".2f"))
    print("  (the floor's figures are its bare POST round trip)")
    print(f"\nthroughput: {args.burst} deliveries from {args.senders} connections, closed loop")
    print(f"{'':38}{'tidings':>12}{'floor':>12}{'ratio':>9}")
    watched = f"{args.subscribers} subscribers"
    for key, label in (("alone", "no subscribers"), ("watched", watched)):
        t, f = tidings[key], floor["alone"]
        print(_row(f"deliveries/s, {label}", t["rate"], f["rate"], ".0f"))
        print(_row("  server CPU per delivery (ms)", t["cpu_ms"], f["cpu_ms"], ".2f"))
        print(_row("  client CPU per delivery (ms)", t["client_cpu_ms"], None, ".2f"))
        if t["failed"]:
            print(f"  {t['failed']} answers were not 2xx")
    verdict = [
        ("p99 POST -> subscriber", tidings["latency_p99"] <= TARGET_P99_MS,
         f"{tidings['latency_p99']:.1f} ms (target <= {TARGET_P99_MS:g} ms)"),
        ("every subscriber aware", tidings["latency_max"] <= AWARE_S * 1000
         and tidings["received"] == tidings["expected"],
         f"worst {tidings['latency_max']:.0f} ms (target <= {AWARE_S:g} s, none lost)"),
        ("ingest throughput", tidings["alone"]["rate"] >= TARGET_RATE,
         f"{tidings['alone']['rate']:.0f}/s (target >= {TARGET_RATE:g}/s; "
         f"{tidings['watched']['rate']:.0f}/s while {watched} get each)"),
    ]  # fmt: skip
    print()
    for name, ok, detail in verdict:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")


# --- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[Result, Result]:
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as name:
        tmp = Path(name)
        tokens = make_store(tmp, args.subscribers)
        results = {}
        for side in ("tidings", "floor"):
            if args.wait_quiet > 0:
                _wait_for_quiet(args.wait_quiet)
            results[side] = figures(run_side(side, args, tmp, tokens))
            print(f"{side}: done", flush=True)
    return results["tidings"], results["floor"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="latency phase deliveries")
    parser.add_argument("--rate", type=float, default=50.0, help="latency phase deliveries/s")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--burst", type=int, default=3000, help="throughput phase deliveries")
    parser.add_argument("--senders", type=int, default=16, help="throughput phase connections")
    parser.add_argument(
        "--wait-quiet", type=float, default=20, help="seconds to wait for an idle machine first"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--role", choices=("floor",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "floor":
        return floor_main(args.port)
    print(
        f"{args.subscribers} websocket subscribers (one member user and API token each), "
        f"GitHub-signed deliveries of {len(payload(1)):,} bytes"
    )
    print(environment(", ".join(f"{n} {package_version(n)}" for n in ("uvicorn", "starlette"))))
    started = time.perf_counter()
    tidings, floor = run(args)
    report(tidings, floor, args)
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"tidings": tidings, "floor": floor}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
