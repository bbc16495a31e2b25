"""A real `tidings serve` (uvicorn), a loopback feed server and the `websockets`
client: what a user of the live stream sees."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets

from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.integration


def entries(*titles: str) -> list[dict[str, str]]:
    return [{"guid": t.lower().replace(" ", "-"), "title": t} for t in titles]


def source(feed_server: FeedServer, sid: str = "news", path: str = "/news.xml") -> str:
    return feed_source(sid, feed_server.url(path))


async def recv_json(ws: Any, wait: float = 20.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), wait))


async def events_until(ws: Any, title: str, wait: float = 30.0) -> list[dict[str, Any]]:
    """Every event message up to and including the one titled `title`."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(wait):
        while True:
            msg = await recv_json(ws, wait)
            if msg["type"] != "event":
                continue
            got.append(msg["event"])
            if msg["event"]["title"] == title:
                return got


async def events_until_closed(ws: Any, wait: float = 30.0) -> tuple[list[dict[str, Any]], int]:
    """Every event message until the server closes; and its close code."""
    got: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(wait):
            while True:
                msg = await recv_json(ws)
                if msg["type"] == "event":
                    got.append(msg["event"])
    assert closed.value.rcvd is not None, "closed without a close frame"
    return got, closed.value.rcvd.code


async def subscribe(ws: Any, stream: str, query: str = "", cursor: int | None = None) -> None:
    await ws.send(
        json.dumps({"type": "subscribe", "stream": stream, "query": query, "cursor": cursor})
    )
    msg = await recv_json(ws)
    assert msg == {"type": "subscribed", "stream": stream}


async def test_new_upstream_entry_reaches_a_subscribed_client(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/news.xml", rss(entries("First")), etag='"v1"')
    with TidingsProcess(write_config(tmp_path, source(feed_server))) as app:
        async with websockets.connect(app.ws_url) as ws:
            await subscribe(ws, "s1", cursor=0)
            [first] = await events_until(ws, "First")
            assert first["source_id"] == "news" and first["kind"] == "feed"
            assert first["external_id"] == "first"
            feed_server.put("/news.xml", rss(entries("First", "Second")), etag='"v2"')
            [second] = await events_until(ws, "Second")
            assert second["id"] > first["id"]
            assert second["url"] == "https://example.org/second"

        # The same event through REST, newest first.
        body = httpx2.get(app.base + "/api/events").json()
        assert [e["title"] for e in body["events"]] == ["Second", "First"]
        assert body["next_cursor"] is None


async def test_restart_then_resume_from_cursor_has_no_gap_and_no_duplicate(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/news.xml", rss(entries("A", "B")), etag='"1"')
    config = write_config(tmp_path, source(feed_server))
    app = TidingsProcess(config).start()
    try:
        async with websockets.connect(app.ws_url) as ws:
            await subscribe(ws, "s", cursor=0)
            seen = await events_until(ws, "B")
        cursor = seen[-1]["id"]
        app.stop()
        # While the app is down, upstream moves on.
        feed_server.put("/news.xml", rss(entries("A", "B", "C", "D")), etag='"2"')
        app.start()
        async with websockets.connect(app.ws_url) as ws:
            await subscribe(ws, "s", cursor=cursor)
            seen += await events_until(ws, "D")
            # And live after the replay; the sentinel proves nothing else was queued.
            feed_server.put("/news.xml", rss(entries("A", "B", "C", "D", "E")), etag='"3"')
            seen += await events_until(ws, "E")
    finally:
        app.stop()
    ids = [e["id"] for e in seen]
    assert [e["title"] for e in seen] == ["A", "B", "C", "D", "E"]
    assert ids == sorted(set(ids))


async def test_filters_bad_queries_and_heartbeats(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.put("/a.xml", rss(entries("Alpha merger")), etag='"a"')
    feed_server.put("/b.xml", rss(entries("Beta merger")), etag='"b"')
    sources = source(feed_server, "a", "/a.xml") + source(feed_server, "b", "/b.xml")
    with TidingsProcess(write_config(tmp_path, sources)) as app:
        async with websockets.connect(app.ws_url) as ws:
            await ws.send(
                json.dumps({"type": "subscribe", "stream": "x", "query": "nope:1", "cursor": None})
            )
            err = await recv_json(ws)
            assert err["type"] == "error" and "nope" in err["message"]
            await subscribe(ws, "only-b", query="source:b merger", cursor=0)
            await subscribe(ws, "text", query="alpha", cursor=0)
            got: dict[str, set[str]] = {"only-b": set(), "text": set()}
            pinged = False
            async with asyncio.timeout(30):
                while not (pinged and got["only-b"] and got["text"]):
                    msg = await recv_json(ws)
                    if msg["type"] == "ping":
                        pinged = True
                    elif msg["type"] == "event":
                        got[msg["stream"]].add(msg["event"]["title"])
            assert got == {"only-b": {"Beta merger"}, "text": {"Alpha merger"}}

        res = httpx2.get(app.base + "/api/events", params={"q": "source:a"})
        assert [e["title"] for e in res.json()["events"]] == ["Alpha merger"]
        assert httpx2.get(app.base + "/api/events", params={"q": "nope:1"}).status_code == 400


async def test_a_client_that_falls_behind_is_dropped_and_resumes(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """A client that reads nothing while a burst bigger than every buffer on
    the way comes: what its connection cannot take at once queues, the queue
    (5 here) overflows, and it is dropped at once (no send timeout: a client
    that keeps reading keeps up). Reading again, it gets what was sent, then
    1013, and resumes from its cursor."""
    feed_server.put("/news.xml", rss(entries("Start")), etag='"0"')
    config = write_config(tmp_path, source(feed_server))
    text = config.read_text().replace("heartbeat = 2", "heartbeat = 2\nclient_queue = 5")
    config.write_text(text)
    burst = big_burst()
    titles = [b["title"] for b in burst]
    with TidingsProcess(config) as app:
        async with websockets.connect(app.ws_url, max_queue=1, compression=None) as ws:
            await subscribe(ws, "s", cursor=0)
            [start] = await events_until(ws, "Start")
            feed_server.put("/news.xml", rss(entries("Start") + burst), etag='"1"')
            await until_dropped(app, wait=8)  # well before send_timeout (10 s)
            received, code = await events_until_closed(ws)
            assert code == 1013 and len(received) < len(burst)
        cursor = received[-1]["id"] if received else start["id"]
        async with websockets.connect(app.ws_url, max_size=None) as ws:
            await subscribe(ws, "s", cursor=cursor)
            received += await events_until(ws, titles[-1])
    assert [e["title"] for e in received] == titles


def big_burst(count: int = 100) -> list[dict[str, str]]:
    """Entries of 72 kB each: without compression, 7 MB of event messages,
    more than a loopback socket's buffers (the server's takes 4 MB)."""
    body = "<p>" + "lorem ipsum " * 6000 + "</p>"
    return [{"guid": f"b{i}", "title": f"Burst {i}", "description": body} for i in range(count)]


def dropped_clients(app: TidingsProcess) -> float:
    metrics = httpx2.get(app.base + "/metrics").text.splitlines()
    [line] = [m for m in metrics if m.startswith("tidings_websocket_slow_clients_dropped_total ")]
    return float(line.split()[-1])


async def until_dropped(app: TidingsProcess, wait: float = 30.0) -> None:
    """The server's counter of dropped clients is all a test can see of a
    client it cannot read from: looked at every 0.1 s, for `wait` at most."""
    for _ in range(int(wait / 0.1)):
        if dropped_clients(app) > 0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no client dropped in {wait} s")


async def test_a_client_that_stops_reading_is_dropped_and_never_slows_the_others(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """A client whose TCP window is full blocks the server's send itself (its
    queue never overflows): the connection's timer ends the send after
    send_timeout and closes it with 1013, while a reading client gets all."""
    feed_server.put("/news.xml", rss(entries("Start")), etag='"0"')
    config = write_config(tmp_path, source(feed_server))
    text = config.read_text().replace(
        "heartbeat = 2", "heartbeat = 2\nsend_timeout = 4\nclient_queue = 100000"
    )
    config.write_text(text)
    burst = big_burst()
    with TidingsProcess(config) as app:
        # A client that reads one frame ahead at most, without compression.
        async with (
            websockets.connect(app.ws_url, max_queue=1, compression=None) as stuck,
            websockets.connect(app.ws_url, max_size=None) as reader,
        ):
            await subscribe(stuck, "s", cursor=0)
            [start] = await events_until(stuck, "Start")
            await subscribe(reader, "s")
            feed_server.put("/news.xml", rss(entries("Start") + burst), etag='"1"')
            got = await events_until(reader, "Burst 99")
            assert [e["title"] for e in got] == [b["title"] for b in burst]
            # The reader had everything before the stuck client's send timed out.
            assert dropped_clients(app) == 0
            await until_dropped(app)
            received, code = await events_until_closed(stuck)
            assert code == 1013
            assert len(received) < len(burst)  # it was cut off mid-burst
        cursor = received[-1]["id"] if received else start["id"]
        async with websockets.connect(app.ws_url, max_size=None) as ws:
            await subscribe(ws, "s", cursor=cursor)
            received += await events_until(ws, "Burst 99")
    assert [e["title"] for e in received] == [b["title"] for b in burst]


async def test_origin_is_checked(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.put("/news.xml", rss(entries("x")), etag='"0"')
    with TidingsProcess(write_config(tmp_path, source(feed_server))) as app:
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(app.ws_url, origin="http://evil.example"):
                pass
        async with websockets.connect(app.ws_url, origin=app.base) as ws:
            await subscribe(ws, "s")


def test_pages_health_and_metrics(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.put("/news.xml", rss(entries("Hello <b>world</b>")), etag='"0"')
    with TidingsProcess(write_config(tmp_path, source(feed_server))) as app:
        assert httpx2.get(app.base + "/healthz").status_code == 200
        assert httpx2.get(app.base + "/readyz").status_code == 200
        page = httpx2.get(app.base + "/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        metrics = httpx2.get(app.base + "/metrics").text
        for name in ("tidings_polls_total", "tidings_poll_errors_total",
                     "tidings_poll_duration_seconds", "tidings_events_stored_total",
                     "tidings_websocket_subscribers"):  # fmt: skip
            assert name in metrics


def test_a_poll_cut_off_by_shutdown_is_due_again_after_restart(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    from aggregator.config import load_config
    from aggregator.store import Store

    feed_server.put(
        "/news.xml", rss(entries("Slow")), delay=5
    )  # past the read timeout: cancelled or failed, never a success
    config = write_config(tmp_path, source(feed_server))
    app = TidingsProcess(config).start()
    try:
        feed_server.wait_for_hit("/news.xml")
        assert feed_server.hits("/news.xml") == 1
    finally:
        app.stop()  # while the poll waits on the slow server
    store = Store(load_config(config).store_url)
    [status] = store.source_statuses(viewer=None)
    store.close()
    assert status.last_poll_at is None  # the poll never finished...
    assert status.next_poll_at is not None  # ...and it is due now, not after its lease
    assert status.next_poll_at <= datetime.now(UTC)
