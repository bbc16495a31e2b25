"""The floor for the live benchmark: a bare Starlette broadcast under uvicorn.

    python -m bench.broadcast_floor --port 8766      # then POST /produce?rate=20&count=400

It speaks just enough of Tidings' `/ws` protocol for the same clients to use
it: a client sends `{"type": "subscribe", "stream": ...}`, gets `subscribed`,
then every produced message. `POST /produce?rate=R&count=N` starts producing
N messages at R per second; each is sent to every connected client at once,
one `send_text` after the other, as it is produced. `GET /produced` lists
`[id, time]` per message, the wall-clock time taken just before its fan-out
began: the floor's "commit". The message has the shape and about the size of
a Tidings event message. No store, no filter, no per-client queue or task:
what is left is Starlette's and uvicorn's (websockets-sansio) cost of one
send, which Tidings cannot go below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.live import STREAM, sample_event

clients: set[WebSocket] = set()
produced: list[tuple[int, float]] = []
producing: list[asyncio.Task[None]] = []


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


async def broadcast(rate: float, count: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        event_id = n + 1
        produced.append((event_id, time.time()))
        text = message(event_id)
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
    produced.clear()
    producing.append(asyncio.create_task(broadcast(rate, count)))
    return JSONResponse({"clients": len(clients)})


async def produced_list(request: Request) -> JSONResponse:
    done = bool(producing) and producing[-1].done()
    return JSONResponse({"done": done, "events": produced})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/produce", produce, methods=["POST"]),
        Route("/produced", produced_list),
        WebSocketRoute("/ws", endpoint),
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        # The same server and websocket implementation as `tidings serve`.
        uvicorn.run(
            app, host="127.0.0.1", port=args.port, ws="websockets-sansio", log_level="warning"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
