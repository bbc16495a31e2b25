"""JSON API polling: one `jsonapi` poll of 10,000 items over 100 pages.

    python -m bench.jsonapi                # 10,000 items, 100 pages, medians of 5 runs (make bench)
    python -m bench.jsonapi --runs 1       # a quick look

A server process on 127.0.0.1 serves 100 pages of 100 GitLab-like events
(about 1 KB of JSON each), linked by `Link: <...>; rel="next"` headers as
GitHub and GitLab do. Each run, in this process, in turn:

- the floor: the same pages fetched with a bare `httpx2.AsyncClient`
  following the Link headers, each body through `json.loads`; nothing mapped,
  nothing stored.
- the connector: `JsonApiConnector.poll` (fetch, parse and map in the parser
  pool), as the poller calls it.
- the poll: `Poller.poll_now()` over the one source into a fresh SQLite
  store: the connector, then sanitising, deciding and one commit of the
  events with the source's state. This is the figure the issue asks for.

Items/s are medians over the runs; ratios are of medians, against the floor.
The parser pool is started before the timings, as in a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.feeds import environment, package_version

PATH = "/api/v4/events"
FIELDS = {
    "id": "id",
    "title": {"template": "{author.name} {action_name} {target_type} {target_title}"},
    "url": "target_url",
    "published": "created_at",
    "author": "author.name",
    "author_url": "author.web_url",
    "summary": "note.body",
    "tags": "labels",
    "object_type": "target_type",
}
Result = dict[str, Any]

_WORDS = [
    "merger",
    "filing",
    "review",
    "draft",
    "counsel",
    "memo",
    "brief",
    "clause",
    "client",
    "deadline",
    "court",
    "motion",
    "exhibit",
    "schedule",
    "agreement",
    "amendment",
    "signature",
    "closing",
    "diligence",
    "escrow",
]


def render_page(page: int, pages: int, per_page: int, base: str) -> tuple[bytes, str | None]:
    """Page `page` (1-based) and its Link header; deterministic."""
    items = []
    for i in range(per_page):
        n = (page - 1) * per_page + i
        words = " ".join(_WORDS[(n * 7 + k) % len(_WORDS)] for k in range(60))
        when = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n)
        items.append(
            {
                "id": 1_000_000 + n,
                "project_id": 42,
                "action_name": "commented on",
                "target_type": "Issue",
                "target_title": f"Matter {n % 977}: {words[:48]}",
                "target_url": f"/legal/matters/-/issues/{n % 977}#note_{n}",
                "created_at": when.isoformat().replace("+00:00", "Z"),
                "author": {
                    "id": n % 50,
                    "name": f"Person {n % 50}",
                    "username": f"person{n % 50}",
                    "web_url": f"https://gitlab.example/person{n % 50}",
                },
                "note": {"body": words, "system": False, "noteable_type": "Issue"},
                "labels": ["legal", f"matter-{n % 977}"],
            }
        )
    link = f'<{base}{PATH}?page={page + 1}&per_page={per_page}>; rel="next"'
    return json.dumps(items).encode(), link if page < pages else None


def _serve(pages: int, per_page: int, ports: Any) -> None:
    """The server process: every page rendered up front, then served."""
    bodies: dict[int, tuple[bytes, str | None]] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            body, link = bodies.get(int(query.get("page", ["1"])[0]), (b"[]", None))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if link:
                self.send_header("Link", link)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    bodies.update((p, render_page(p, pages, per_page, base)) for p in range(1, pages + 1))
    ports.put(server.server_address[1])
    server.serve_forever()


def _source(url: str, pages: int, items: int) -> dict[str, Any]:
    return {
        "id": "gitlab-events",
        "kind": "jsonapi",
        "url": url,
        "fields": FIELDS,
        "pagination": {"type": "link", "max_pages": pages},
        "max_items": items,
    }


async def floor_run(url: str) -> tuple[int, float]:
    """Items and seconds: bare httpx2 and json.loads over the pages."""
    import httpx2

    async with httpx2.AsyncClient() as client:
        started = time.perf_counter()
        found, target = 0, url
        while target:
            resp = await client.get(target)
            found += len(json.loads(resp.content))
            target = resp.links.get("next", {}).get("url")
        return found, time.perf_counter() - started


async def tidings_run(url: str, pages: int, items: int) -> tuple[Result, Result]:
    """(connector, poll) each as {items, seconds}, with a fresh store."""
    from aggregator.config import parse_config
    from aggregator.poller import Poller
    from aggregator.store import Store
    from connectors.jsonapi import JsonApiConnector, JsonApiOptions

    with tempfile.TemporaryDirectory(prefix="bench-jsonapi-") as tmp:
        raw = {"store": {"url": f"sqlite:///{tmp}/t.db"}, "sources": [_source(url, pages, items)]}
        config = parse_config(raw)
        [source] = config.sources
        store = Store(config.store_url)
        store.sync_sources(config.sources, datetime.now(UTC))
        poller = Poller(config, store)
        try:
            await poller.start_workers()
            ctx = poller.context(source, datetime.now(UTC))
            started = time.perf_counter()
            assert isinstance(source.options, JsonApiOptions)
            result = await JsonApiConnector(source.options).poll(None, ctx)
            alone = {"items": len(result.events), "seconds": time.perf_counter() - started}
            started = time.perf_counter()
            [outcome] = await poller.poll_now()
            seconds = time.perf_counter() - started
        finally:
            await poller.aclose()
            store.close()
        if outcome.error:
            raise SystemExit(f"the poll failed: {outcome.error}")
        return alone, {"items": len(outcome.new_event_ids), "seconds": seconds}


async def measure(url: str, args: argparse.Namespace) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {"floor": [], "connector": [], "poll": []}
    expected = args.pages * args.per_page
    await floor_run(url)  # warm-up: imports, the server's first connections
    for _ in range(args.runs):
        found, seconds = await floor_run(url)
        runs["floor"].append({"items": found, "seconds": seconds})
        alone, whole = await tidings_run(url, args.pages, expected)
        runs["connector"].append(alone)
        runs["poll"].append(whole)
        for side in runs:
            if runs[side][-1]["items"] != expected:
                raise SystemExit(f"{side}: {runs[side][-1]['items']} items, not {expected}")
    return runs


def rate(results: Sequence[Result]) -> float:
    return statistics.median(r["items"] / r["seconds"] for r in results)


def print_report(runs: dict[str, list[Result]], args: argparse.Namespace, size: int) -> None:
    items = args.pages * args.per_page
    floor = rate(runs["floor"])
    print(
        f"\nJSON API polling: {items:,} items over {args.pages} pages of {args.per_page} "
        f"({size / 1e6:.1f} MB of JSON), medians of {args.runs} run(s)"
    )
    labels = {
        "floor": "floor: httpx2 + json.loads, nothing mapped",
        "connector": "Tidings connector: fetch, parse, map",
        "poll": "Tidings poll: + sanitise, decide, store",
    }
    for side, label in labels.items():
        per_second = rate(runs[side])
        seconds = statistics.median(r["seconds"] for r in runs[side])
        ratio = "" if side == "floor" else f"  {per_second / floor:.2f}x the floor"
        print(f"  {label:<44} {per_second:>9,.0f} items/s  {seconds:6.2f} s{ratio}")
    every = ", ".join(f"{r['items'] / r['seconds']:,.0f}" for r in runs["poll"])
    print(f"  (poll items/s per run: {every})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"  # built-in connectors only, like the tests
    libraries = f"httpx2 {package_version('httpx2')}, jmespath {package_version('jmespath')}"
    print(environment(libraries), flush=True)
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.pages, args.per_page, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        url = f"http://127.0.0.1:{port}{PATH}?page=1&per_page={args.per_page}"
        size = len(render_page(1, args.pages, args.per_page, "")[0]) * args.pages  # about
        runs = asyncio.run(measure(url, args))
    finally:
        server.terminate()
        server.join(10)
    print_report(runs, args, size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
