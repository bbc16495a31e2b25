"""`/ws`: filtered live streams with resume, no gap and no duplicate.

The connection subscribes to the bus *before* it reads any backlog; every
stream remembers the highest id it sent, and a live event at or below it is
skipped. So an event committed while the backlog is read arrives exactly once.
A client that lets its queue fill up, or stops reading for `send_timeout`, is
closed with 1013 ("try again later") and resumes from its cursor; it never
slows anyone else. Each connection runs one loop in its own task that sleeps
on a single signal. While that loop is idle, nothing is queued and the
transport takes more without waiting, the fan-out sends an event itself
(`send_direct`, through the server's unwrapped `send`): no wake-up, no task
switch. Anything else goes through the queue and the loop, which keeps the
order (bench/live.py measures 1,000 connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
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


class TooSlowError(Exception):
    """The client fell behind: closed with 1013, it resumes from its cursor."""


@dataclass(eq=False)  # compared and hashed by identity: a re-subscription is a new Stream
class Stream:
    name: str
    filter: EventFilter
    sent_up_to: int
    prefix: str = field(init=False, repr=False)  # an event message up to the event itself

    def __post_init__(self) -> None:
        self.prefix = f'{{"type":"event","stream":{json.dumps(self.name)},"event":'


def origin_allowed(websocket: WebSocket) -> bool:
    """Browsers send Origin; it must be this host. Scripts send none."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


RAW_SEND = "tidings.raw_send"


class KeepRawSend:
    """Keeps a websocket's `send` as the server gave it, before any middleware
    wraps it, in its scope (`RAW_SEND`): live events go out through it, four
    wrappers fewer per message, and the fan-out can see whether the
    connection takes more (uvicorn's `writable`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


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
        # Each stream's filter runs once per event, at publish time (`wants`);
        # `deliver` uses the verdicts, by event id, then forgets them.
        self._verdicts: dict[int, dict[Stream, bool]] = {}
        # Set by whatever gives `run` something to do: a queued event, an
        # overflow, a client message, a rule change, the heartbeat timer.
        self._ready = asyncio.Event()
        self.sub = state.bus.subscribe(state.config.server.client_queue)
        self.sub.accepts = self.wants
        self.sub.wake = self._ready.set
        # The server's own send, unwrapped (KeepRawSend), and uvicorn's sign
        # that the connection takes more without waiting: with both, the
        # fan-out sends to an idle connection itself (send_direct).
        raw = websocket.scope.get(RAW_SEND)
        writable = getattr(getattr(raw, "__self__", None), "writable", None)
        self._raw_send: Send | None = raw
        self._writable = writable if isinstance(writable, asyncio.Event) else None
        if self._raw_send is not None and self._writable is not None:
            self.sub.direct = self.send_direct
        self._busy = True  # `run` is doing something (or has not started, or ended)
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0  # time.monotonic() of the last message in or out
        self._send_started: float | None = None  # time.monotonic() when a send began
        self._send_stuck = False

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

    def event_message(self, stream: Stream, event: Event) -> str:
        # Each event is serialised once per app, however many clients receive it.
        return stream.prefix + self.state.event_json.get(event) + "}"

    def wants(self, event: Event) -> bool:
        """Whether to queue `event` (called at publish time)."""
        if not self.may_see(event):
            return False
        verdicts = {s: s.filter.matches(event) for s in self.streams.values()}
        if True in verdicts.values():
            self._verdicts[event.id] = verdicts
            return True
        return False

    async def send(self, payload: dict[str, Any]) -> None:
        await self.send_text(json.dumps(payload, separators=(",", ":")))

    async def send_text(self, text: str) -> None:
        """A client that stops reading fills its TCP window and a send blocks;
        past `send_timeout` `_tick` cancels it, and the client is treated like
        one whose queue overflowed. (A timeout per send would cost a timer
        per message.)"""
        self._send_started = time.monotonic()
        try:
            if self._raw_send is None:
                await self.ws.send_text(text)
            else:
                try:
                    await self._raw_send({"type": "websocket.send", "text": text})
                except OSError:  # uvicorn's ClientDisconnected, as Starlette maps it
                    raise WebSocketDisconnect(1006) from None
        finally:
            self._send_started = None

    async def send_direct(self, event: Event) -> bool:
        """The fan-out's fast path (`Subscription.direct`): when `run` is idle,
        nothing is queued and the transport takes more without waiting, the
        event is checked and sent here and now, by the fan-out's task. False
        leaves it to the queue and `run` (which then keeps the order)."""
        writable = self._writable
        if self._busy or writable is None or not writable.is_set():
            return False
        if self.sub.overflowed.is_set():
            return False
        if not self.wants(event):
            return True  # nothing to send, as `offer` would have decided
        try:
            sent, done = await self.deliver(event, direct=True)
        except (WebSocketDisconnect, RuntimeError):  # gone: `run` hears it from receive
            return True
        metrics.DELIVERED.inc(sent)
        self._last_active = time.monotonic()
        return done  # not done: the transport filled up mid-event; the queue goes on

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
            await self.send(
                {"type": "error", "stream": name, "message": str(err), "position": err.position}
            )
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
            # and nothing here has noticed yet (an idle tail checks them once
            # a second).
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
                await self.send_text(self.event_message(stream, event))
                stream.sent_up_to = event.id
            metrics.DELIVERED.inc(len(page))
            if len(page) < MAX_PAGE:
                return

    async def deliver(self, event: Event, *, direct: bool = False) -> tuple[int, bool]:
        """Send `event` to each stream that wants it: how many sends, and
        whether it is done. `direct` (the fan-out's task, which must never
        wait) stops before a send the transport cannot take at once; the
        streams still to send keep their `sent_up_to`, so the queue finishes
        the event without sending anything twice."""
        sent = 0
        verdicts = self._verdicts.pop(event.id, None) or {}
        for stream in tuple(self.streams.values()):
            if event.id <= stream.sent_up_to:
                continue  # already sent in this stream's replay, or just now
            matches = verdicts.get(stream)
            if matches is None:  # the stream is newer than the verdicts
                matches = stream.filter.matches(event)
            # Visibility is checked again now: the rules may have changed
            # since the event was queued.
            if matches and self.may_see(event):
                if direct and not (self._writable is not None and self._writable.is_set()):
                    return sent, False
                stream.sent_up_to = event.id
                await self.send_text(self.event_message(stream, event))
                sent += 1
            else:
                stream.sent_up_to = event.id
        return sent, True

    def _on_done(self, _: object) -> None:
        self._ready.set()

    def _watch(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        """`awaitable` as a task that sets `_ready` when it is done."""
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(self._on_done)
        return task

    def _tick(self) -> None:
        """The connection's one timer, every few seconds: it cancels a send
        stuck for `send_timeout`, and wakes `run` when a heartbeat is due."""
        now = time.monotonic()
        started = self._send_started
        server = self.state.config.server
        stuck = started is not None and now - started >= server.send_timeout
        if stuck and self._task is not None:
            self._send_stuck = True
            self._task.cancel()
            return
        if now - self._last_active >= server.heartbeat:
            self._ready.set()
        tick = min(server.heartbeat, server.send_timeout) / 4
        self._timer = asyncio.get_running_loop().call_later(tick, self._tick)

    async def run(self) -> None:
        """One loop per connection. It waits for one signal (`_ready`) rather
        than for a set of tasks, and its timer is not re-armed per message, so
        an event costs no task, timer or callback per client: with a thousand
        clients that is most of what a fan-out would cost."""
        self._task = task = asyncio.current_task()
        assert task is not None
        heartbeat = self.state.config.server.heartbeat
        queue = self.sub.queue
        receive = self._watch(self.receive())
        changed = self._watch(self.state.access.changed().wait())
        self._last_active = time.monotonic()
        self._tick()
        try:
            if self.principal is None:  # signed out before the connection started
                raise SignedOutError
            while True:
                self._busy = False
                await self._ready.wait()
                self._busy = True
                self._ready.clear()
                if self.sub.overflowed.is_set():
                    raise TooSlowError
                active = False
                if changed.done():
                    if self.principal is None:
                        raise SignedOutError
                    changed = self._watch(self.state.access.changed().wait())
                    active = True
                if receive.done():
                    await self.handle(receive.result())
                    receive = self._watch(self.receive())
                    active = True
                if queue:
                    sent = 0
                    while queue:
                        sent += (await self.deliver(queue.popleft()))[0]
                    metrics.DELIVERED.inc(sent)  # once per wake-up, not per send
                    active = True
                now = time.monotonic()
                if active:
                    self._last_active = now
                elif now - self._last_active >= heartbeat:
                    await self.send({"type": "ping"})
                    self._last_active = now
        except asyncio.CancelledError:
            if not self._send_stuck:
                raise
            task.uncancel()
            await self._too_slow()
        except TooSlowError:
            await self._too_slow()
        except SignedOutError:
            await self.close(POLICY_VIOLATION, "signed out")
        finally:
            self._busy = True
            if self._timer is not None:
                self._timer.cancel()
            for waiting in (receive, changed):
                waiting.cancel()
                with contextlib.suppress(BaseException):
                    await waiting
            self.sub.close()
            metrics.SUBSCRIBERS.dec(len(self.streams))

    async def _too_slow(self) -> None:
        metrics.DROPPED.inc()
        await self.close(TRY_AGAIN_LATER, "too slow; resume from your cursor")

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.state.config.server.send_timeout):
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
        # In a task of its own, a wake-up resumes the connection's loop alone,
        # not the dozen middleware frames this endpoint runs under: with a
        # thousand clients, every event wakes every one of them.
        await asyncio.create_task(conn.run(), name="websocket")
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away; its cursor lets it resume
    finally:
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close()
