"""The live fan-out's fast path (web/live.py `send_direct`): the fan-out sends
to an idle connection itself, but never waits for one. The transport here is
a stand-in for uvicorn's protocol (its `writable` and its `send`), so that it
can fill up between two sends of one event, which a real socket does only by
chance; tests/integration/test_live.py drives the same paths over real
sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aggregator.bus import Bus
from aggregator.filters import EventFilter
from tests.unit.test_auth import Site, make_site, new_session, site
from web.live import RAW_SEND, LiveConnection, Stream

__all__ = ["make_site", "site"]  # fixtures, used by name


class Transport:
    """uvicorn's websocket protocol as the fast path sees it: `writable`
    (cleared when the transport is paused) and `send`, which waits for it."""

    def __init__(self, room: int) -> None:
        self.room = room  # sends it takes before it pauses
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[dict[str, Any]] = []
        self.got_two = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.sent.append(json.loads(message["text"]))
        if len(self.sent) >= 2:
            self.got_two.set()
        self.room -= 1
        if self.room <= 0:
            self.writable.clear()  # as asyncio pauses a protocol over its high-water mark

    def drain(self) -> None:
        self.room = 100
        self.writable.set()


class Socket:
    """Enough of a Starlette WebSocket: a client that sends nothing."""

    def __init__(self, transport: Transport) -> None:
        self.scope = {RAW_SEND: transport.send}

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_text(self, text: str) -> None:
        raise AssertionError("events go out through the raw send")

    async def close(self, code: int, reason: str) -> None:
        pass


def test_the_fan_out_never_waits_for_a_connection_that_fills_up_mid_event(site: Site) -> None:
    """Two streams on one connection, whose transport pauses after the first
    send: the fan-out sends the first, leaves the second to the connection's
    own loop and goes on to the next connection at once."""
    state = site.state
    ada = state.access.snapshot.user_named("ada")
    assert ada is not None and site.client.portal is not None
    principal = state.access.principal(ada, "session", new_session(site, ada.id))
    [event, *_] = state.store.latest_events(viewer=None)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        isolated = dataclasses.replace(state, bus=Bus())
        full, roomy = Transport(room=1), Transport(room=100)
        slow = LiveConnection(Socket(full), isolated, principal)  # type: ignore[arg-type]
        fast = LiveConnection(Socket(roomy), isolated, principal)  # type: ignore[arg-type]
        for conn, names in ((slow, ("s1", "s2")), (fast, ("s1",))):
            for name in names:
                conn.streams[name] = Stream(name, EventFilter(), event.id - 1)
        loops = [asyncio.create_task(c.run()) for c in (slow, fast)]
        try:
            async with asyncio.timeout(5):
                for _ in range(1000):  # a few steps each, then both loops wait
                    if not (slow._busy or fast._busy):
                        break
                    await asyncio.sleep(0)  # yield: nothing else to wait on
                assert not (slow._busy or fast._busy)
                await isolated.bus.fan_out([event])  # must not wait for `slow`
                assert [m["stream"] for m in roomy.sent] == ["s1"]
                assert [m["stream"] for m in full.sent] == ["s1"]
                assert list(slow.sub.queue) == [event]  # the rest is the loop's
                full.drain()
                await full.got_two.wait()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        return full.sent, roomy.sent

    full_sent, roomy_sent = site.client.portal.call(scenario)
    # Each stream got the event exactly once, from one path or the other.
    assert [(m["stream"], m["event"]["id"]) for m in full_sent] == [
        ("s1", event.id),
        ("s2", event.id),
    ]
    assert [(m["stream"], m["event"]["id"]) for m in roomy_sent] == [("s1", event.id)]


def test_a_busy_connection_keeps_its_order_through_the_queue(site: Site) -> None:
    """While a connection's loop is busy (here: not started), the fan-out
    queues instead of sending, so a replay in progress is never overtaken."""
    state = site.state
    ada = state.access.snapshot.user_named("ada")
    assert ada is not None and site.client.portal is not None
    principal = state.access.principal(ada, "session", new_session(site, ada.id))
    [event, *_] = state.store.latest_events(viewer=None)

    async def scenario() -> tuple[int, list[Any]]:
        isolated = dataclasses.replace(state, bus=Bus())
        transport = Transport(room=100)
        conn = LiveConnection(Socket(transport), isolated, principal)  # type: ignore[arg-type]
        conn.streams["s"] = Stream("s", EventFilter(), event.id - 1)
        try:
            await isolated.bus.fan_out([event])
            return len(transport.sent), list(conn.sub.queue)
        finally:
            conn.sub.close()

    sent, queued = site.client.portal.call(scenario)
    assert (sent, queued) == (0, [event])
