"""A loopback feed generator: N deterministic RSS 2.0 feeds with strong ETags.

`render_feeds(n)` builds the documents (seeded, so every process that calls it
gets the same bytes); `serve_feeds(n)` serves them from a separate process so
the server never shares a GIL with whatever is being measured:

    with serve_feeds(500) as server:
        server.url(7)       # http://127.0.0.1:PORT/feed/7.xml
        server.stats()      # requests, 200s, 304s, conditional ones, connections, CPU

The server is a bare asyncio Protocol answering HTTP/1.1 with keep-alive from
responses rendered once at start-up, so it costs a few microseconds a request.
`GET /feed/N.xml` with a matching If-None-Match gets a 304; `GET /_stats` returns
the counters as JSON (and the server's CPU seconds and peak RSS).
`render_feeds(n, items=(3, 5))` makes small feeds, for rounds of 10,000 sources
that must not hold gigabytes. `python -m bench.feedgen --feeds 5` serves them
by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape

SEED = "tidings-bench-1"
MIN_ITEMS, MAX_ITEMS = 20, 50
MIN_HTML, MAX_HTML = 1024, 3072
_BASE_DATE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench's parent

_WORDS = (
    "account", "action", "agenda", "analysis", "approval", "archive", "audit", "board", "brief",
    "budget", "calendar", "case", "change", "client", "clause", "committee", "compliance",
    "contract", "counsel", "court", "deadline", "decision", "deal", "draft", "due", "diligence",
    "estate", "evidence", "filing", "finance", "firm", "hearing", "incident", "invoice",
    "issue", "judgment", "ledger", "licence", "litigation", "market", "matter", "meeting",
    "memo", "merger", "motion", "notice", "office", "opinion", "partner", "patent", "policy",
    "portfolio", "practice", "proposal", "quarter", "record", "regulator", "release", "report",
    "review", "risk", "ruling", "schedule", "security", "settlement", "share", "statement",
    "status", "strategy", "summary", "tax", "team", "tender", "term", "ticket", "timeline",
    "trade", "transfer", "treaty", "update", "vendor", "version", "workflow", "quietly",
    "rapidly", "carefully", "formally", "jointly", "finally", "already", "again", "early",
    "late", "new", "revised", "final", "interim", "joint", "annual", "internal", "external",
    "pending", "urgent",
)  # fmt: skip
_NAMES = (
    "Jane Doe", "Arjun Mehta", "Chloé Martin", "Kwame Mensah", "Li Wei", "Sofia Rossi",
    "Tomasz Nowak", "Fatima Zahra", "Olivia Brown", "Mateo García", "Yuki Tanaka",
)  # fmt: skip
_CATEGORIES = (
    "litigation", "m&a", "tax", "compliance", "ip", "employment", "real-estate",
    "banking", "energy", "privacy", "antitrust", "arbitration",
)  # fmt: skip


def _sentence(rng: random.Random, feed: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 20))]
    roll = rng.random()
    i = rng.randrange(len(words))
    # Roughly the inline markup a CMS emits: some emphasis, some links.
    if roll < 0.25:
        words[i] = f"<em>{words[i]}</em>"
    elif roll < 0.4:
        words[i] = f"<strong>{words[i]}</strong>"
    elif roll < 0.6:
        href = f"https://news{feed % 7}.example.org/{rng.choice(_WORDS)}/{rng.randrange(10**6)}"
        words[i] = f'<a href="{href}" title="{words[i]}">{words[i]}</a>'
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _description(rng: random.Random, feed: int, item: int) -> str:
    """1-3 KB of HTML: paragraphs, links, one <img>, sometimes a list."""
    target = rng.randint(MIN_HTML, MAX_HTML)
    parts = [
        f'<p><img src="https://cdn.example.org/f{feed}/i{item}.jpg" '
        f'alt="{rng.choice(_WORDS)} {rng.choice(_WORDS)}" width="640" height="360"></p>'
    ]
    if rng.random() < 0.3:
        parts.append("<ul>" + "".join(f"<li>{_sentence(rng, feed)}</li>" for _ in range(3)))
        parts[-1] += "</ul>"
    size = sum(map(len, parts)) + len(parts) - 1
    while size < target:
        para = "<p>" + " ".join(_sentence(rng, feed) for _ in range(rng.randint(2, 5))) + "</p>"
        if size + len(para) >= MAX_HTML:  # stay within 3 KB: end on a short paragraph
            para = f"<p>{_sentence(rng, feed)}</p>"
            if size + len(para) >= MAX_HTML:
                break
        parts.insert(rng.randint(1, len(parts)), para)
        size += len(para) + 1  # and its newline
    return "\n".join(parts)


Items = tuple[int, int]  # the least and most items a feed has
ITEMS: Items = (MIN_ITEMS, MAX_ITEMS)


def parse_items(text: str) -> Items:
    """ "3-5" or "4" -> (3, 5) or (4, 4): the command-line form of `Items`."""
    low, _, high = text.partition("-")
    items = (int(low), int(high or low))
    if not 1 <= items[0] <= items[1]:
        raise ValueError(f"items must be N or MIN-MAX with 1 <= MIN <= MAX, not {text!r}")
    return items


def render_feed(index: int, seed: str = SEED, items: Items = ITEMS) -> bytes:
    """Feed `index` as RSS 2.0 bytes: 20-50 items (or `items`), newest first,
    1-3 KB of HTML each."""
    rng = random.Random(f"{seed}:{index}")  # str seeds go through SHA-512: stable everywhere
    parts = []
    when = _BASE_DATE - timedelta(minutes=rng.randrange(600))
    for k in range(rng.randint(*items)):
        name = rng.choice(_NAMES)
        title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 10))).capitalize()
        cats = rng.sample(_CATEGORIES, rng.randint(1, 3))
        parts.append(
            "<item>"
            f'<guid isPermaLink="false">tag:feeds.example.org,2026:{index}/{k}</guid>'
            f"<title>{escape(title)}</title>"
            f"<link>https://news{index % 7}.example.org/feed{index}/item{k}.html</link>"
            f"<pubDate>{format_datetime(when, usegmt=True)}</pubDate>"
            f"<author>{name.split()[0].lower()}@example.org ({escape(name)})</author>"
            + "".join(f"<category>{escape(c)}</category>" for c in cats)
            + f"<description><![CDATA[{_description(rng, index, k)}]]></description>"
            "</item>"
        )
        when -= timedelta(minutes=rng.randint(5, 600))
    doc = (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>Feed {index}</title><link>https://news{index % 7}.example.org/feed{index}/</link>"
        f"<description>Generated feed {index}</description><language>en</language>"
        f"<lastBuildDate>{format_datetime(_BASE_DATE, usegmt=True)}</lastBuildDate>\n"
        + "\n".join(parts)
        + "</channel></rss>\n"
    )
    return doc.encode("utf-8")


def render_feeds(n: int, seed: str = SEED, items: Items = ITEMS) -> list[bytes]:
    return [render_feed(i, seed, items) for i in range(n)]


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


# --- the server (runs in its own process) -----------------------------------


class _Counters:
    def __init__(self) -> None:
        self.requests = self.ok = self.not_modified = self.conditional = self.connections = 0

    def as_json(self) -> bytes:
        names = ("requests", "ok", "not_modified", "conditional", "connections")
        fields = {k: getattr(self, k) for k in names}
        return json.dumps({**fields, "cpu": time.process_time(), "rss_mb": _peak_rss_mb()}).encode()


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): shows what serving N feeds holds."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _response(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class _Site:
    full: dict[bytes, bytes]  # path -> whole 200 response
    not_modified: dict[bytes, bytes]  # path -> whole 304 response
    etags: dict[bytes, bytes]


class _Http(asyncio.Protocol):
    """Just enough HTTP/1.1 for body-less GETs, with keep-alive and pipelining."""

    def __init__(self, site: _Site, counters: _Counters) -> None:
        self.site = site
        self.counters = counters
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1  # shows whether a client reuses connections

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            if not self._answer(head):
                return

    def _answer(self, head: bytes) -> bool:
        assert self.transport is not None
        lines = head.split(b"\r\n")
        request_line = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        site, c = self.site, self.counters
        c.requests += 1
        path = request_line[1] if len(request_line) == 3 else b""
        if path in site.full:
            inm = headers.get(b"if-none-match")
            c.conditional += inm is not None
            if inm is not None and site.etags[path] in [t.strip() for t in inm.split(b",")]:
                c.not_modified += 1
                out = site.not_modified[path]
            else:
                c.ok += 1
                out = site.full[path]
        elif path == b"/_stats":
            out = _response("200 OK", {"Content-Type": "application/json"}, c.as_json())
        else:
            out = _response("404 Not Found", {"Content-Type": "text/plain"}, b"not found")
        self.transport.write(out)
        closing = headers.get(b"connection", b"").lower() == b"close"
        if closing or request_line[-1:] == [b"HTTP/1.0"]:
            self.transport.close()
            return False
        return True


def publish(site: _Site, feed: int, body: bytes) -> None:
    """Serve `body` as feed `feed` from now on, with its own ETag."""
    path = f"/feed/{feed}.xml".encode()
    tag = etag_of(body)
    site.etags[path] = tag.encode()
    site.full[path] = _response(
        "200 OK", {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": tag}, body
    )
    site.not_modified[path] = _response("304 Not Modified", {"ETag": tag})


def _build_site(n: int, seed: str, items: Items) -> _Site:
    site = _Site({}, {}, {})
    for i in range(n):
        publish(site, i, render_feed(i, seed, items))  # one at a time: responses are kept
    return site


def _serve(n: int, seed: str, port: int, items: Items) -> None:
    site = _build_site(n, seed, items)  # everything rendered before the port is announced
    counters = _Counters()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Http(site, counters), "127.0.0.1", port, backlog=1024
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(run())


@dataclass
class FeedServer:
    port: int
    n_feeds: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def url(self, index: int) -> str:
        return f"http://{self.host}:{self.port}/feed/{index}.xml"

    def stats(self) -> dict[str, float]:
        """Counters since start-up, plus the server process's CPU seconds."""
        return fetch_stats(self.port, self.host)


def fetch_stats(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    with urllib.request.urlopen(f"http://{host}:{port}/_stats", timeout=10) as resp:
        data: dict[str, float] = json.load(resp)
        return data


@contextlib.contextmanager
def serve_feeds(
    n_feeds: int,
    *,
    seed: str = SEED,
    port: int = 0,
    items: Items = ITEMS,
    timeout: float = 300.0,
) -> Iterator[FeedServer]:
    """Serve `n_feeds` generated feeds on 127.0.0.1 from a child process
    (10,000 feeds of 3-5 items take about 15 s to render and hold ~150 MB)."""
    # A plain subprocess rather than multiprocessing: a fresh interpreter whatever
    # the caller's __main__ is (stdin, pytest), sharing nothing but the import path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_ROOT, *filter(None, sys.path)])}
    cmd = [sys.executable, "-m", "bench.feedgen", "--child", "--feeds", str(n_feeds),
           "--port", str(port), "--seed", seed, "--items", f"{items[0]}-{items[1]}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise RuntimeError(f"feed generator did not start within {timeout}s")
        yield FeedServer(port=int(line), n_feeds=n_feeds, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve generated RSS feeds on 127.0.0.1.")
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", default=SEED)
    parser.add_argument(
        "--items", type=parse_items, default=ITEMS, help="items per feed, N or MIN-MAX (20-50)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # started by serve_feeds: print the port once listening
        _serve(args.feeds, args.seed, args.port, args.items)
        return
    with serve_feeds(args.feeds, seed=args.seed, port=args.port, items=args.items) as server:
        print(f"serving {args.feeds} feeds at {server.url(0)} ... (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
