"""`/ws`: filtered live streams with resume, no gap and no duplicate.

The connection subscribes to the bus *before* it reads any backlog; every
stream remembers the highest id it sent, and a live event at or below it is
skipped. So an event committed while the backlog is read arrives exactly once.
A client that lets its queue fill up is closed with 1013 ("try again later")
and resumes from its cursor; it never slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from aggregator import metrics
from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.store import MAX_PAGE
from aggregator.types import Event
from web.access import Principal
from web.auth import principal_of
from web.state import AppState, app_state

log = logging.getLogger(__name__)

MAX_STREAMS = 32
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008  # also: signed out, disabled or token revoked while connected
SEND_TIMEOUT = 10.0  # seconds one frame may wait for a client to read


class TooSlowError(Exception):
    """The client fell behind: closed with 1013, it resumes from its cursor."""


@dataclass
class Stream:
    name: str
    filter: EventFilter
    sent_up_to: int


def origin_allowed(websocket: WebSocket) -> bool:
    """Browsers send Origin; it must be this host. Scripts send none."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


class SignedOutError(Exception):
    """The connection's user may no longer sign in: closed with 1008."""


class LiveConnection:
    def __init__(self, websocket: WebSocket, state: AppState, principal: Principal) -> None:
        self.ws = websocket
        self.state = state
        self._principal: Principal | None = principal
        # None: re-check at first use. The rules may have changed between the
        # handshake's authentication and now (accept() awaits).
        self._revision: int | None = None
        self.streams: dict[str, Stream] = {}
        self.sub = state.bus.subscribe(state.config.server.client_queue)
        self.sub.accepts = self.wants

    @property
    def principal(self) -> Principal | None:
        """Who this connection serves, under the access rules of this moment:
        checked on every event, so a change applies to what is already queued."""
        access = self.state.access
        if self._principal is not None and self._revision != access.snapshot.revision:
            self._principal = access.refreshed(self._principal)
            self._revision = access.snapshot.revision
        return self._principal

    def may_see(self, event: Event) -> bool:
        principal = self.principal
        return principal is not None and principal.viewer.can_see(event.source_id)

    def event_message(self, stream: str, event: Event) -> str:
        # Each event is serialised once per app, however many clients receive it.
        body = self.state.event_json.get(event)
        return f'{{"type":"event","stream":{json.dumps(stream)},"event":{body}}}'

    def wants(self, event: Event) -> bool:
        return self.may_see(event) and any(s.filter.matches(event) for s in self.streams.values())

    async def send(self, payload: dict[str, Any]) -> None:
        await self.send_text(json.dumps(payload, separators=(",", ":")))

    async def send_text(self, text: str) -> None:
        """A client that stops reading fills its TCP window and a send blocks;
        past SEND_TIMEOUT it is treated like one whose queue overflowed."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.ws.send_text(text)
        except TimeoutError:
            raise TooSlowError from None

    async def receive(self) -> str | None:
        """The next text frame; None for a binary one."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text: str | None = message.get("text")
        return text

    async def handle(self, raw: str | None) -> None:
        if raw is None:
            await self.send({"type": "error", "message": "send JSON in text frames"})
            return
        try:
            msg = json.loads(raw)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError:
            await self.send({"type": "error", "message": "message is not JSON"})
            return
        if kind == "subscribe":
            await self.subscribe(msg)
        elif kind == "unsubscribe":
            if self.streams.pop(str(msg.get("stream")), None) is not None:
                metrics.SUBSCRIBERS.dec()
        elif kind in ("ping", "pong"):
            if kind == "ping":
                await self.send({"type": "pong"})
        else:
            await self.send({"type": "error", "message": f"unknown message type {kind!r}"})

    async def subscribe(self, msg: dict[str, Any]) -> None:
        name = msg.get("stream")
        cursor = msg.get("cursor")
        if not isinstance(name, str) or not name:
            await self.send({"type": "error", "message": "subscribe needs a 'stream' name"})
            return
        if cursor is not None and (not isinstance(cursor, int) or isinstance(cursor, bool)):
            await self.send(
                {"type": "error", "stream": name, "message": "cursor must be an integer or null"}
            )
            return
        if name not in self.streams and len(self.streams) >= MAX_STREAMS:
            await self.send(
                {"type": "error", "stream": name, "message": f"at most {MAX_STREAMS} streams"}
            )
            return
        query = msg.get("query", "")
        if not isinstance(query, str | None):
            await self.send({"type": "error", "stream": name, "message": "query must be a string"})
            return
        try:
            flt = EventFilter.parse(query)
        except QueryError as err:
            await self.send({"type": "error", "stream": name, "message": str(err)})
            return
        if name not in self.streams:
            metrics.SUBSCRIBERS.inc()
        # Events already queued for this connection are at or below what the tail
        # has published, so "live from now" starts there. A cursor beyond the
        # newest committed id (a client of a store since reset) would mute the
        # stream: clamp it.
        if cursor is None:
            start = self.state.tail.last_id
        else:
            newest = await run_in_threadpool(self.state.store.max_event_id)
            start = max(0, min(cursor, newest))  # nor below 0: it reaches a query
        stream = Stream(name, flt, start)
        self.streams[name] = stream
        await self.send({"type": "subscribed", "stream": name})
        if cursor is not None:
            await self.replay(stream)

    async def replay(self, stream: Stream) -> None:
        store = self.state.store
        while True:
            # The rules of this moment, even if another process changed them
            # and nothing here has noticed yet (the tail checks once a second).
            await self.state.access.current()
            principal = self.principal
            if principal is None:
                raise SignedOutError
            page = await run_in_threadpool(
                partial(
                    store.events_after, stream.sent_up_to, stream.filter, viewer=principal.viewer
                )
            )
            for event in page:
                await self.send_text(self.event_message(stream.name, event))
                stream.sent_up_to = event.id
            metrics.DELIVERED.inc(len(page))
            if len(page) < MAX_PAGE:
                return

    async def deliver(self, event: Event) -> None:
        for stream in list(self.streams.values()):
            if event.id <= stream.sent_up_to:
                continue  # already sent in this stream's replay
            stream.sent_up_to = event.id
            if stream.filter.matches(event) and self.may_see(event):
                await self.send_text(self.event_message(stream.name, event))
                metrics.DELIVERED.inc()

    async def run(self) -> None:
        heartbeat = self.state.config.server.heartbeat
        receive = asyncio.ensure_future(self.receive())
        next_event = asyncio.ensure_future(self.sub.queue.get())
        overflow = asyncio.ensure_future(self.sub.overflowed.wait())
        changed = asyncio.ensure_future(self.state.access.changed().wait())
        try:
            if self.principal is None:  # signed out before the connection started
                raise SignedOutError
            while True:
                done, _ = await asyncio.wait(
                    {receive, next_event, overflow, changed},
                    timeout=heartbeat,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if overflow in done:
                    raise TooSlowError
                if changed in done:
                    if self.principal is None:
                        raise SignedOutError
                    changed = asyncio.ensure_future(self.state.access.changed().wait())
                if receive in done:
                    await self.handle(receive.result())
                    receive = asyncio.ensure_future(self.receive())
                if next_event in done:
                    await self.deliver(next_event.result())
                    while not self.sub.queue.empty():
                        await self.deliver(self.sub.queue.get_nowait())
                    next_event = asyncio.ensure_future(self.sub.queue.get())
                if not done:
                    await self.send({"type": "ping"})
        except TooSlowError:
            metrics.DROPPED.inc()
            await self.close(TRY_AGAIN_LATER, "too slow; resume from your cursor")
        except SignedOutError:
            await self.close(POLICY_VIOLATION, "signed out")
        finally:
            for task in (receive, next_event, overflow, changed):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self.sub.close()
            metrics.SUBSCRIBERS.dec(len(self.streams))

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.ws.close(code, reason)


async def websocket_endpoint(websocket: WebSocket) -> None:
    if not origin_allowed(websocket):
        await websocket.close(POLICY_VIOLATION)
        return
    principal = principal_of(websocket)
    if principal is None:
        # The handshake is refused with a plain 401, as /api/* answers.
        await websocket.send_denial_response(
            JSONResponse({"error": "sign in or send Authorization: Bearer TOKEN"}, 401)
        )
        return
    await websocket.accept()
    conn = LiveConnection(websocket, app_state(websocket), principal)
    try:
        await conn.run()
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away; its cursor lets it resume
    finally:
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close()
