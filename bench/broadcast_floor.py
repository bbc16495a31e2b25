"""The floor for the live benchmark: commit to SQLite, then a bare Starlette broadcast.

    python -m bench.broadcast_floor --port 8766      # then POST /produce?rate=20&count=400

It speaks just enough of Tidings' `/ws` protocol for the same clients to use
it: a client sends `{"type": "subscribe", "stream": ...}`, gets `subscribed`,
then every produced message.

`POST /produce?rate=R&count=N` starts a producer thread that makes N events
at R per second on a fixed schedule (event n at start + n/R, whatever the
fan-out is doing). Each event is committed first, as Tidings' writer commits
its events: one transaction (`BEGIN IMMEDIATE`, one INSERT of the event's
fields, `COMMIT`) to the SQLite file `--db`, with the settings of Tidings'
SQLite store (WAL, `synchronous=NORMAL`). The thread takes `time.time()`
right after the commit (the floor's commit time, the point at which Tidings'
writer takes its own) and hands the event's id to the event loop
(`call_soon_threadsafe`). There one task builds the message (the shape and
about the size of a Tidings event message) and sends it to every connected
client, one `send_text` after the other; an event committed during a fan-out
waits for it to end, and that wait counts in its latency. Ids go on from one
`/produce` to the next. `GET /produced` lists `[id, time after commit]` for
the last `/produce`'s events so far, and whether all of them are committed.

No filter, no per-client queue or task, no look for new events (the commit
hands the event straight over): what is left is a commit and Starlette's and
uvicorn's (websockets-sansio) cost of one send per client, which Tidings
cannot go below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.live import STREAM, sample_event

clients: set[WebSocket] = set()
produced: list[tuple[int, float]] = []
producers: list[threading.Thread] = []
event_ids = itertools.count(1)


def message(event_id: int) -> str:
    """What Tidings sends for an event (`Event.to_json()` in the same order)."""
    e = sample_event(event_id)
    now = datetime.now(UTC).isoformat()
    body = {
        "id": event_id,
        "source_id": e.source_id,
        "kind": "feed",
        "verb": "Create",
        "object_type": "Article",
        "external_id": e.external_id,
        "title": e.title,
        "summary": e.summary,
        "content_html": e.content_html,
        "url": e.url,
        "actor": {"name": e.actor, "email": None, "url": None},
        "published": now,
        "updated": None,
        "tags": list(e.tags),
        "thread_id": None,
        "ingested_at": now,
    }
    event = json.dumps(body, separators=(",", ":"))
    return f'{{"type":"event","stream":{json.dumps(STREAM)},"event":{event}}}'


def open_database(path: Path) -> sqlite3.Connection:
    """The floor's store: one table of events, Tidings' SQLite settings."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    db.execute(
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, source_id TEXT NOT NULL,"
        " external_id TEXT NOT NULL UNIQUE, title TEXT, summary TEXT, content_html TEXT,"
        " url TEXT, actor TEXT, tags TEXT, published TEXT NOT NULL, ingested_at TEXT NOT NULL)"
    )
    return db


def produce_events(
    db: sqlite3.Connection,
    committed: asyncio.Queue[int],
    loop: asyncio.AbstractEventLoop,
    rate: float,
    count: int,
) -> None:
    """The producer thread: commit each event on schedule, then hand it over."""
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        event_id = next(event_ids)
        e = sample_event(event_id)
        now = datetime.now(UTC).isoformat()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, e.source_id, e.external_id, e.title, e.summary, e.content_html, e.url,
             e.actor, json.dumps(e.tags), now, now),
        )  # fmt: skip
        db.execute("COMMIT")
        produced.append((event_id, time.time()))
        loop.call_soon_threadsafe(committed.put_nowait, event_id)


async def broadcast(committed: asyncio.Queue[int]) -> None:
    """Each committed event to every connected client, in commit order."""
    while True:
        text = message(await committed.get())
        for ws in list(clients):
            try:
                await ws.send_text(text)
            except Exception:  # gone: forget it, as a bare broadcast would
                clients.discard(ws)


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        hello = json.loads(await websocket.receive_text())
        stream = hello.get("stream")
        await websocket.send_text(json.dumps({"type": "subscribed", "stream": stream}))
        clients.add(websocket)
        while True:
            await websocket.receive_text()  # nothing to do with what a client says
    except (WebSocketDisconnect, RuntimeError, ValueError):
        pass
    finally:
        clients.discard(websocket)


async def produce(request: Request) -> JSONResponse:
    rate = float(request.query_params.get("rate", "20"))
    count = int(request.query_params.get("count", "400"))
    if producers and producers[-1].is_alive():
        return JSONResponse({"error": "still producing"}, status_code=409)
    produced.clear()
    state = request.app.state
    work = (state.db, state.committed, asyncio.get_running_loop(), rate, count)
    thread = threading.Thread(target=produce_events, args=work, daemon=True)
    producers.append(thread)
    thread.start()
    return JSONResponse({"clients": len(clients)})


async def produced_list(request: Request) -> JSONResponse:
    done = bool(producers) and not producers[-1].is_alive()
    return JSONResponse({"done": done, "events": produced})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.db = open_database(app.state.database)
    app.state.committed = asyncio.Queue()
    fan_out = asyncio.create_task(broadcast(app.state.committed))
    try:
        yield
    finally:
        fan_out.cancel()
        app.state.db.close()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/produce", produce, methods=["POST"]),
        Route("/produced", produced_list),
        WebSocketRoute("/ws", endpoint),
    ],
    lifespan=lifespan,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--db", type=Path, default=Path("floor.db"), help="the SQLite file to commit to"
    )
    args = parser.parse_args(argv)
    app.state.database = args.db
    with contextlib.suppress(KeyboardInterrupt):
        # The same server and websocket implementation as `tidings serve`.
        uvicorn.run(
            app, host="127.0.0.1", port=args.port, ws="websockets-sansio", log_level="warning"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
