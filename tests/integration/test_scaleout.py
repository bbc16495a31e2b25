"""Several processes on one store, as `tidings serve --no-poller` workers and
`tidings poller`s run beyond one machine: every subscriber, on whichever
worker, sees every event exactly once and in id order, in history and live,
while pollers and webhook deliveries to both workers write at once.

On PostgreSQL (TIDINGS_TEST_STORE=postgresql) the workers hear each other's
commits through LISTEN/NOTIFY; on SQLite they look every 25 ms. Both run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets

from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.integration

FEEDS = 12
ROUNDS = 3  # each round adds one item to every feed; polled every 5 s
SENDERS = 4  # webhook senders, to both workers in turn, until the rounds are done
PACE = 0.1  # seconds between one sender's deliveries: load, not synchronisation
SENTINEL = "sentinel"

HOOK = """
[[sources]]
id = "hook"
kind = "webhook"
signature = "none"
[sources.fields]
id = "ref"
title = "message"
"""


def feed_items(feed: int, count: int) -> list[dict[str, str]]:
    return [{"guid": f"f{feed}-{k}", "title": f"feed {feed} item {k}"} for k in range(count)]


def put_feeds(feed_server: FeedServer, count: int) -> None:
    for feed in range(FEEDS):
        feed_server.put(f"/f{feed}.xml", rss(feed_items(feed, count)), etag=f'"{count}"')


async def next_event(ws: Any, wait: float = 60.0) -> dict[str, Any]:
    async with asyncio.timeout(wait):
        while True:
            msg = json.loads(await ws.recv())
            assert msg["type"] != "error", msg
            if msg["type"] == "event":
                event: dict[str, Any] = msg["event"]
                return event


async def subscribe(ws: Any, query: str = "", cursor: int | None = 0) -> None:
    await ws.send(
        json.dumps({"type": "subscribe", "stream": "s", "query": query, "cursor": cursor})
    )
    reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert reply == {"type": "subscribed", "stream": "s"}, reply


async def deliver(client: httpx2.AsyncClient, worker: TidingsProcess, ref: str) -> None:
    body = {"ref": ref, "message": ref}
    res = await client.post(f"{worker.base}/hooks/hook", json=body)
    assert res.status_code == 200, (res.status_code, res.text)


async def history(client: httpx2.AsyncClient, worker: TidingsProcess) -> list[int]:
    """Every event id, from the REST history, oldest first."""
    ids: list[int] = []
    cursor: int | None = None
    for _ in range(100):  # bounded: 500 a page
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{worker.base}/api/events", params=params)).json()
        ids += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids[::-1]
    raise AssertionError("history did not end")


@contextlib.contextmanager
def processes(config: Path) -> Iterator[tuple[TidingsProcess, TidingsProcess]]:
    """Two web workers without pollers, and two pollers."""
    workers = [TidingsProcess(config, "serve", "--no-poller", log=f"web{i}.log") for i in (1, 2)]
    pollers = [TidingsProcess(config, "poller", log=f"poller{i}.log") for i in (1, 2)]
    with contextlib.ExitStack() as stack:
        for proc in (*workers, *pollers):
            stack.enter_context(proc)
        yield workers[0], workers[1]


async def test_every_subscriber_sees_every_event_once_across_two_workers(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    put_feeds(feed_server, 1)
    feeds = "".join(
        feed_source(f"feed{i}", feed_server.url(f"/f{i}.xml"), interval="5s") for i in range(FEEDS)
    )
    config = write_config(tmp_path, HOOK + feeds)
    sent: list[str] = []
    seen: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "hooks": [], "moving": []}
    arrived = asyncio.Event()  # set on every event subscriber "a" gets

    async def read(ws: Any, name: str) -> None:
        """Every event up to and including the sentinel delivery."""
        got = seen[name]
        while not got or got[-1]["title"] != SENTINEL:
            got.append(await next_event(ws))
            arrived.set()

    async def move(first: Any, to: TidingsProcess) -> None:
        """Leave the first worker partway in; resume on `to` from the cursor."""
        while len(seen["moving"]) < FEEDS * 2:
            seen["moving"].append(await next_event(first))
        await first.close()
        async with websockets.connect(to.ws_url) as resumed:
            await subscribe(resumed, cursor=seen["moving"][-1]["id"])
            await read(resumed, "moving")

    with processes(config) as (a, b):
        async with (
            httpx2.AsyncClient(timeout=30) as client,
            websockets.connect(a.ws_url) as on_a,
            websockets.connect(b.ws_url) as on_b,
            websockets.connect(b.ws_url) as hooks_on_b,
            websockets.connect(a.ws_url) as moving,
        ):
            for ws in (on_a, on_b, moving):
                await subscribe(ws)
            await subscribe(hooks_on_b, "source:hook")
            readers = asyncio.gather(
                read(on_a, "a"), read(on_b, "b"), read(hooks_on_b, "hooks"), move(moving, b)
            )
            rounds_done = asyncio.Event()

            async def send(sender: int) -> None:
                for n in range(10_000):  # bounded; ends with the feed rounds
                    if rounds_done.is_set():
                        return
                    ref = f"delivery {sender}.{n}"
                    await deliver(client, (a, b)[n % 2], ref)
                    sent.append(ref)
                    await asyncio.sleep(PACE)

            async def feed_rounds() -> None:
                for count in range(2, ROUNDS + 2):
                    await asyncio.to_thread(put_feeds, feed_server, count)
                    while sum(e["source_id"] != "hook" for e in seen["a"]) < FEEDS * count:
                        arrived.clear()
                        await asyncio.wait_for(arrived.wait(), 60)  # all polled: the next round
                rounds_done.set()

            await asyncio.gather(feed_rounds(), *(send(s) for s in range(SENDERS)))
            # Everything is written; one last delivery marks the end of the stream.
            await deliver(client, b, SENTINEL)
            await asyncio.wait_for(readers, 60)
            stored = await history(client, a)

    assert len(stored) == FEEDS * (1 + ROUNDS) + len(sent) + 1 == len(set(stored))
    for name in ("a", "b", "moving"):
        ids = [e["id"] for e in seen[name]]
        assert ids == stored, f"subscriber {name}: {len(ids)} events, {len(stored)} stored"
    hook_titles = sorted(e["title"] for e in seen["hooks"])
    assert hook_titles == sorted([*sent, SENTINEL])
    assert [e["id"] for e in seen["hooks"]] == sorted(e["id"] for e in seen["hooks"])
