"""Who sees what, end to end: users x sources x read paths on a real `tidings serve`.

Every read path must show a user exactly the sources their groups admit: not
one event more (no leak) and not one less (nothing allowed goes missing). The
expected table below is written out by hand, not derived from the code under
test. Read paths include personal feeds (whose URL token is the credential),
saved streams' unread counts, OPML, AS2 and ranked search. The live part
changes access rules from this process, as the CLI or another web worker
would, while websockets are open.

Events are written straight into the store from this process (another writer,
like `tidings poll`); the server's poller is off, so the server notices them
only through its live tail, as it notices rule changes only through the
store's revision.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx2
import pytest
import websockets

from aggregator.accounts import hash_password
from aggregator.config import SourceConfig, load_config
from aggregator.decide import prepare
from aggregator.store import Store
from aggregator.store.schema import ALERTS_SOURCE
from aggregator.types import EventData
from tests.support import TidingsProcess, feed_source, write_config
from web.feeds import FEED_SIZE

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
AUDIENCES: dict[str, list[str]] = {
    "news": ["everyone"],
    "legal": ["legal"],
    "hr": ["hr"],
    "board": [],  # admins only
    "joint": ["legal", "hr"],
}
ALL = frozenset(AUDIENCES)
# name -> (admin, groups)
PEOPLE: dict[str, tuple[bool, list[str]]] = {
    "root": (True, []),
    "lena": (False, ["legal"]),
    "hugo": (False, ["hr"]),
    "bea": (False, ["legal", "hr"]),
    "nils": (False, []),
    "dora": (False, ["legal"]),  # disabled below
}
DISABLED = "dora"
# What each enabled user may see, written out by hand.
EXPECTED: dict[str, frozenset[str]] = {
    "root": ALL,
    "lena": frozenset({"news", "legal", "joint"}),
    "hugo": frozenset({"news", "hr", "joint"}),
    "bea": frozenset({"news", "legal", "hr", "joint"}),
    "nils": frozenset({"news"}),
}
USERS = sorted(EXPECTED)
# A saved query that names every source, the hidden ones included.
EVERY_SOURCE = "source:" + ",".join(sorted(ALL))
FORMATS = ("atom", "rss", "json")


def keyword(source_id: str) -> str:
    """A word only that source's event titles contain (no keyword contains another)."""
    return f"kw{source_id}"


@dataclass
class World:
    """A running server, the store it serves (opened here too), and credentials."""

    app: TidingsProcess
    store: Store
    sources: dict[str, SourceConfig]
    tokens: dict[str, str]

    def add_event(self, source_id: str, title: str) -> int:
        """Commit one event from this process, as another writer would."""
        now = datetime.now(UTC)
        item = EventData(external_id=uuid.uuid4().hex, title=title, summary=f"About {title}")
        [event_id] = self.store.record_poll(
            self.sources[source_id], prepare([item]), state=None, now=now, next_poll_at=now
        )
        return event_id

    def truth(self) -> dict[int, str]:
        """Every event id and its source, read by the system (no viewer)."""
        return {e.id: e.source_id for e in self.store.latest_events(viewer=None, limit=500)}

    def titles(self) -> dict[int, str]:
        """Every event id and its title, read by the system (no viewer)."""
        return {e.id: e.title for e in self.store.latest_events(viewer=None, limit=500)}

    def visible_ids(self, user: str, source_id: str | None = None) -> set[int]:
        return {
            i
            for i, s in self.truth().items()
            if s in EXPECTED[user] and (source_id is None or s == source_id)
        }

    def http(self, user: str | None = None) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx2.Client(base_url=self.app.base, headers=headers, timeout=10)

    def ws(self, user: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else None
        return websockets.connect(self.app.ws_url, additional_headers=headers, **kw)


def build_world(directory: Path, people: dict[str, tuple[bool, list[str]]]) -> World:
    tables = "".join(
        feed_source(sid, f"http://127.0.0.1:9/{sid}.xml", title=f"{sid.title()} desk")
        + f"audience = {json.dumps(audience)}\n"
        for sid, audience in AUDIENCES.items()
    )
    path = write_config(directory, tables)
    # Nothing polls: events come only from this process, through the store.
    path.write_text(path.read_text().replace("[poller]\n", "[poller]\nenabled = false\n"))
    config = load_config(path)
    store = Store(config.store_url)
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now, config_file=str(config.path))
    hashed = hash_password(PASSWORD)
    tokens: dict[str, str] = {}
    for name, (admin, groups) in people.items():
        store.people.create_user(
            name, password_hash=hashed, admin=admin, groups=groups, actor="test", now=now
        )
        tokens[name] = store.people.create_token(name, "matrix", actor="test", now=now)
    if DISABLED in people:
        store.people.update_user(DISABLED, disabled=True, actor="test", now=now)
    world = World(TidingsProcess(path), store, {s.id: s for s in config.sources}, tokens)
    for sid in AUDIENCES:
        for n in range(3):
            world.add_event(sid, f"{sid} memo {n} {keyword(sid)}")
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("matrix"), PEOPLE)
    built.app.start()
    try:
        yield built
    finally:
        built.app.stop()
        built.store.close()


# --- helpers ------------------------------------------------------------------


async def recv_json(ws: Any, wait: float = 15.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait))
    return message


async def send_json(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def subscribe(ws: Any, stream: str, query: str = "", cursor: int | None = None) -> None:
    await send_json(ws, {"type": "subscribe", "stream": stream, "query": query, "cursor": cursor})
    assert await recv_json(ws) == {"type": "subscribed", "stream": stream}


async def events_until(
    ws: Any, last: Callable[[dict[str, Any]], bool], wait: float = 20.0
) -> list[dict[str, Any]]:
    """Event messages up to and including the first for which `last` holds."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(wait):
        while True:
            msg = await recv_json(ws, wait)
            if msg["type"] == "event":
                got.append(msg)
                if last(msg):
                    return got


def titled(title: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: msg["event"]["title"] == title


async def close_code(ws: Any, wait: float = 15.0) -> int | None:
    """Read (and drop) messages until the server closes; its close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(wait):
            while True:
                await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd else None


def all_pages(client: httpx2.Client, limit: int, query: str = "") -> list[int]:
    """Walk /api/events page by page; every id, in the order received."""
    ids: list[int] = []
    cursor: int | None = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": limit, "q": query}
        if cursor is not None:
            params["cursor"] = cursor
        res = client.get("/api/events", params=params)
        assert res.status_code == 200, res.text
        body = res.json()
        ids += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("paging did not end")


@contextmanager
def sign_in(base: str, user: str) -> Iterator[httpx2.Client]:
    """A browser-like client with a session from the /login form."""
    with httpx2.Client(base_url=base, timeout=10) as client:
        form = client.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match, form.text
        res = client.post(
            "/login",
            data={"name": user, "password": PASSWORD, "csrf_token": match.group(1), "next": "/"},
        )
        assert res.status_code == 303 and res.headers["location"] == "/", res.text
        yield client


def dashboard_view(page: str) -> tuple[list[int], set[str], set[str]]:
    """The event ids listed, the sources they are labelled with, and the
    source names handed to the page's script."""
    ids = [int(i) for i in re.findall(r'<li class="event" data-id="(\d+)"', page)]
    labelled = set(re.findall(r'<span class="source" title="([^"]+)"', page))
    match = re.search(r'data-sources="([^"]*)"', page)
    assert match, page
    names = set(json.loads(html.unescape(match.group(1))))
    return ids, labelled, names


def save_streams(client: httpx2.Client, queries: dict[str, str]) -> dict[str, int]:
    """Saves a stream per name (each starts with nothing unread); their ids by name."""
    ids: dict[str, int] = {}
    for name, query in queries.items():
        res = client.post("/api/streams", json={"name": name, "query": query})
        assert res.status_code == 201 and res.json()["unread"] == 0, res.text
        ids[name] = res.json()["id"]
    return ids


def streams_listing(client: httpx2.Client) -> dict[str, Any]:
    res = client.get("/api/streams")
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


def unread_counts(client: httpx2.Client) -> dict[str, int]:
    """Each saved stream's unread count, by name."""
    streams = streams_listing(client)["streams"]
    assert not any(s["unread_more"] for s in streams)
    return {s["name"]: s["unread"] for s in streams}


def feed_token(url: str) -> str:
    """The token in a personal-feed URL."""
    match = re.fullmatch(r"http://[^/]+/feeds/([^/]+)/\w+\.(atom|rss|json)", url)
    assert match, url
    return match.group(1)


def feed_ids(reader: httpx2.Client, urls: dict[str, str]) -> dict[str, list[int]]:
    """A stream's feed in every format, parsed: the event ids of its entries, in order."""
    got: dict[str, list[int]] = {}
    for fmt, url in urls.items():
        res = reader.get(url)
        assert res.status_code == 200, (url, res.text)
        if fmt == "json":  # feedparser 6.0 does not read JSON Feed
            entry_ids = [item["id"] for item in res.json()["items"]]
        else:
            parsed = feedparser.parse(res.content)
            assert not parsed.bozo, (url, parsed.get("bozo_exception"))
            entry_ids = [entry.id for entry in parsed.entries]
        # An entry's id is the event's URL in the API.
        prefix = str(reader.base_url).rstrip("/") + "/api/events/"
        got[fmt] = [int(i.removeprefix(prefix)) for i in entry_ids]
    return got


# --- history, single events, sources -------------------------------------------


@pytest.mark.parametrize("user", USERS)
def test_history_shows_exactly_the_users_sources(world: World, user: str) -> None:
    with world.http(user) as client:
        body = client.get("/api/events", params={"limit": 500}).json()
        assert {e["source_id"] for e in body["events"]} == EXPECTED[user]
        assert {e["id"] for e in body["events"]} == world.visible_ids(user)
        assert body["next_cursor"] is None


@pytest.mark.parametrize("user", USERS)
def test_queries_naming_a_source_or_its_words(world: World, user: str) -> None:
    with world.http(user) as client:
        for sid in sorted(ALL):
            expected = world.visible_ids(user, sid)  # empty when not allowed
            assert (sid in EXPECTED[user]) == bool(expected)
            for query in (f"source:{sid}", keyword(sid), f'"{sid} memo 1"'):
                res = client.get("/api/events", params={"q": query, "limit": 500})
                assert res.status_code == 200, (query, res.text)  # never an error
                got = {e["id"] for e in res.json()["events"]}
                if query.startswith('"'):
                    assert got <= expected and len(got) == (1 if expected else 0)
                else:
                    assert got == expected, (user, query)
        everything = client.get("/api/events", params={"q": "source:" + ",".join(sorted(ALL))})
        assert {e["source_id"] for e in everything.json()["events"]} == EXPECTED[user]
        others = client.get("/api/events", params={"q": "-source:news", "limit": 500})
        assert {e["source_id"] for e in others.json()["events"]} == EXPECTED[user] - {"news"}


@pytest.mark.parametrize("user", USERS)
def test_paging_walks_exactly_the_visible_events(world: World, user: str) -> None:
    with world.http(user) as client:
        ids = all_pages(client, limit=2)
        assert ids == sorted(world.visible_ids(user), reverse=True)  # newest first, no repeats
        legal = all_pages(client, limit=1, query="source:legal,board")
        assert set(legal) == world.visible_ids(user, "legal") | world.visible_ids(user, "board")


def each_event(
    world: World, client: httpx2.Client, user: str, suffix: str = ""
) -> dict[int, tuple[str, httpx2.Response]]:
    """GET /api/events/{id}{suffix} for every event: a hidden one must answer
    exactly as an id that does not exist (no oracle); the visible ones'
    source ids and responses, each a 200."""
    missing = client.get(f"/api/events/999999{suffix}")
    assert missing.status_code == 404
    found = {}
    for event_id, sid in world.truth().items():
        res = client.get(f"/api/events/{event_id}{suffix}")
        if sid in EXPECTED[user]:
            assert res.status_code == 200, event_id
            found[event_id] = (sid, res)
        else:
            assert (res.status_code, res.json()) == (404, missing.json()), event_id
    return found


@pytest.mark.parametrize("user", USERS)
def test_single_events_are_404_when_not_visible(world: World, user: str) -> None:
    with world.http(user) as client:
        for sid, res in each_event(world, client, user).values():
            assert res.json()["source_id"] == sid


@pytest.mark.parametrize("user", USERS)
def test_sources_lists_only_visible_ones_and_counts_only_for_admins(
    world: World, user: str
) -> None:
    with world.http(user) as client:
        sources = client.get("/api/sources").json()["sources"]
        assert {s["id"] for s in sources} == EXPECTED[user]
        if user == "root":
            truth = world.truth()
            counts = {sid: list(truth.values()).count(sid) for sid in ALL}
            assert {s["id"]: s["event_count"] for s in sources} == counts
            assert {s["id"]: s["audience"] for s in sources} == AUDIENCES
        else:
            # Counts, health and audiences are for admins.
            assert all(set(s) == {"id", "kind", "title"} for s in sources)
        metrics = client.get("/metrics")
        assert metrics.status_code == (200 if user == "root" else 403)


# --- the dashboard, with a session -------------------------------------------------


@pytest.mark.parametrize("user", USERS)
def test_dashboard_with_a_session(world: World, user: str) -> None:
    with sign_in(world.app.base, user) as browser:
        page = browser.get("/")
        assert page.status_code == 200
        ids, labelled, names = dashboard_view(page.text)
        # Admins also get Tidings' own alerts source among the names (quiet here).
        alerts = {ALERTS_SOURCE} if user == "root" else set()
        assert labelled == EXPECTED[user] and names == EXPECTED[user] | alerts
        newest = sorted(world.visible_ids(user), reverse=True)
        assert ids == newest[: len(ids)] and ids  # the newest visible page
        for sid in sorted(ALL):
            for query in (f"source:{sid}", keyword(sid)):
                shown, _, _ = dashboard_view(browser.get("/", params={"q": query}).text)
                assert set(shown) == world.visible_ids(user, sid), (user, query)
        # The session works on the API too (what the page's script would call).
        api = browser.get("/api/events", params={"limit": 500}).json()["events"]
        assert {e["source_id"] for e in api} == EXPECTED[user]


# --- websockets: backlog and live --------------------------------------------------


@pytest.mark.parametrize("user", USERS)
async def test_websocket_backlog_per_stream(world: World, user: str) -> None:
    streams = {"all": ""} | {f"src-{s}": f"source:{s}" for s in ALL}
    streams |= {f"kw-{s}": keyword(s) for s in ALL}
    async with world.ws(user) as ws:
        for name, query in streams.items():
            await send_json(ws, {"type": "subscribe", "stream": name, "query": query, "cursor": 0})
        # Messages are handled in order: the pong comes after every replay.
        await send_json(ws, {"type": "ping"})
        subscribed: set[str] = set()
        got: dict[str, list[int]] = {name: [] for name in streams}
        async with asyncio.timeout(20):
            while (msg := await recv_json(ws))["type"] != "pong":
                if msg["type"] == "subscribed":
                    subscribed.add(msg["stream"])
                else:
                    assert msg["type"] == "event", msg
                    got[msg["stream"]].append(msg["event"]["id"])
    assert subscribed == set(streams)
    assert got["all"] == sorted(world.visible_ids(user))  # oldest first, once each
    for sid in ALL:
        assert got[f"src-{sid}"] == sorted(world.visible_ids(user, sid)), sid
        assert got[f"kw-{sid}"] == sorted(world.visible_ids(user, sid)), sid


async def test_live_events_reach_exactly_their_audience(world: World) -> None:
    async with (
        world.ws("root") as root,
        world.ws("lena") as lena,
        world.ws("hugo") as hugo,
        world.ws("bea") as bea,
        world.ws("nils") as nils,
    ):
        sockets = {"root": root, "lena": lena, "hugo": hugo, "bea": bea, "nils": nils}
        for ws in sockets.values():
            await subscribe(ws, "live")
            await subscribe(ws, "narrow", "source:legal,board,hr")
        added = {world.add_event(sid, f"live {sid}"): sid for sid in sorted(ALL)}
        # Ids are handed out in commit order and published in id order, so once
        # the sentinel (visible to all) arrives, everything before it was decided.
        sentinel = world.add_event("news", "live sentinel")
        for user, ws in sockets.items():
            got = await events_until(ws, titled("live sentinel"))
            live = [m["event"] for m in got if m["stream"] == "live"]
            narrow = [m["event"] for m in got if m["stream"] == "narrow"]
            assert [e["id"] for e in live] == sorted(
                [i for i, s in added.items() if s in EXPECTED[user]] + [sentinel]
            ), user
            assert {e["source_id"] for e in narrow} == EXPECTED[user] & {"legal", "board", "hr"}


async def test_a_session_works_on_the_websocket(world: World) -> None:
    with sign_in(world.app.base, "hugo") as browser:
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    headers = {"Cookie": cookie}
    async with websockets.connect(
        world.app.ws_url, additional_headers=headers, origin=world.app.base
    ) as ws:
        await send_json(ws, {"type": "subscribe", "stream": "s", "query": "", "cursor": 0})
        await send_json(ws, {"type": "ping"})
        seen: set[str] = set()
        while (msg := await recv_json(ws))["type"] != "pong":
            if msg["type"] == "event":
                seen.add(msg["event"]["source_id"])
    assert seen == EXPECTED["hugo"]
    # The same cookie from another site's page is refused (cross-site websocket hijacking).
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(
            world.app.ws_url, additional_headers=headers, origin="http://evil.example"
        ):
            pass


# --- saved streams: personal feeds, unread counts, OPML; AS2 and search ----------------


@pytest.fixture(scope="module")
def saved(world: World) -> dict[str, int]:
    """Each user's saved stream of every source, by user: its id."""
    ids: dict[str, int] = {}
    for user in USERS:
        with world.http(user) as client:
            ids[user] = save_streams(client, {"everything": EVERY_SOURCE})["everything"]
    return ids


@pytest.mark.parametrize("user", USERS)
def test_personal_feeds_show_exactly_the_users_sources(
    world: World, saved: dict[str, int], user: str
) -> None:
    assert len(world.truth()) < FEED_SIZE  # else a feed holds only the newest ones
    with world.http(user) as client:
        listing = streams_listing(client)
    [stream] = [s for s in listing["streams"] if s["id"] == saved[user]]
    newest_first = sorted(world.visible_ids(user), reverse=True)
    with world.http() as reader:  # a feed reader: the URL is the only credential
        for urls in (stream["feeds"], listing["feeds"]):  # the saved stream, and `all`
            assert set(urls) == set(FORMATS)
            assert feed_ids(reader, urls) == dict.fromkeys(FORMATS, newest_first), user


def test_a_feed_token_serves_only_its_owners_streams(world: World, saved: dict[str, int]) -> None:
    tokens: dict[str, str] = {}
    for user in USERS:
        with world.http(user) as client:
            tokens[user] = feed_token(streams_listing(client)["feeds"]["atom"])
    assert len(set(tokens.values())) == len(USERS)
    with world.http() as reader:
        missing = reader.get(f"/feeds/{tokens['nils']}/999999.atom")
        assert missing.status_code == 404
        for user, token in tokens.items():
            for owner, stream_id in saved.items():
                for fmt in FORMATS:
                    res = reader.get(f"/feeds/{token}/{stream_id}.{fmt}")
                    if owner == user:
                        assert res.status_code == 200, (user, fmt)
                    else:  # the same answer as for a stream that does not exist
                        assert (res.status_code, res.text) == (404, missing.text), (user, owner)
        # The MAC is bound to the user id: nils's MAC under root's id is nobody.
        root_id = tokens["root"].partition(".")[0]
        forged = f"{root_id}.{tokens['nils'].partition('.')[2]}"
        for stream in ("all", str(saved["root"])):
            res = reader.get(f"/feeds/{forged}/{stream}.atom")
            assert (res.status_code, res.text) == (404, missing.text)


def test_a_rotated_feed_token_ends_every_old_url(world: World, saved: dict[str, int]) -> None:
    def feeds(listing: dict[str, Any]) -> list[dict[str, str]]:
        """The URLs of `all`, then of the saved stream."""
        [stream] = [s for s in listing["streams"] if s["id"] == saved["hugo"]]
        return [listing["feeds"], stream["feeds"]]

    with world.http("hugo") as hugo, world.http("lena") as lena:
        old = feeds(streams_listing(hugo))
        others = streams_listing(lena)["feeds"]
        rotated = hugo.post("/api/feed-token/rotate")
        assert rotated.status_code == 200, rotated.text
        new = feeds(streams_listing(hugo))
    assert new[0] == rotated.json()["feeds"]
    assert feed_token(new[0]["atom"]) != feed_token(old[0]["atom"])
    expected = dict.fromkeys(FORMATS, sorted(world.visible_ids("hugo"), reverse=True))
    with world.http() as reader:
        missing = reader.get("/feeds/0.nobody/all.atom")
        assert missing.status_code == 404
        for urls in old:
            for url in urls.values():
                res = reader.get(url)
                assert (res.status_code, res.text) == (404, missing.text), url
        for urls in new:
            assert feed_ids(reader, urls) == expected
        # Another user's token is not touched.
        assert feed_ids(reader, others)["atom"] == sorted(world.visible_ids("lena"), reverse=True)


def test_unread_counts_only_what_the_user_may_see(world: World) -> None:
    queries = {"unread all": ""} | {f"unread {sid}": f"source:{sid}" for sid in ALL}
    made: dict[str, dict[str, int]] = {}
    for user in USERS:
        with world.http(user) as client:
            made[user] = save_streams(client, queries)
            # Nothing is unread yet, though the history matches the queries.
            counts = unread_counts(client)
            assert {name: counts[name] for name in queries} == dict.fromkeys(queries, 0)

    def expected(user: str, added: dict[int, str], read_up_to: int = 0) -> dict[str, int]:
        seen = [(i, s) for i, s in added.items() if s in EXPECTED[user]]
        by_source = {f"unread {sid}": sum(s == sid for _, s in seen) for sid in ALL}
        return {"unread all": sum(i > read_up_to for i, _ in seen)} | by_source

    def counted(user: str) -> dict[str, int]:
        with world.http(user) as client:
            counts = unread_counts(client)
            one = client.get(f"/api/streams/{made[user]['unread all']}")
            assert one.status_code == 200 and one.json()["unread"] == counts["unread all"]
        return {name: counts[name] for name in queries}

    # One event from each source; `board` (admins only) comes last, so for
    # members the newest event is one they may not see.
    order = sorted(ALL, key=lambda sid: (sid == "board", sid))
    added = {world.add_event(sid, f"{sid} unread {keyword(sid)}"): sid for sid in order}
    for user in USERS:
        assert counted(user) == expected(user, added), user

    # "Read everything" reads up to the newest event the user may see: never an
    # id they may not (that would say when the hidden source last had news).
    read_up_to: dict[str, int] = {}
    for user in USERS:
        with world.http(user) as client:
            res = client.post(f"/api/streams/{made[user]['unread all']}/read", json={})
            assert res.status_code == 200, res.text
            read_up_to[user] = res.json()["last_read_id"]
        assert read_up_to[user] == max(world.visible_ids(user)), user
        assert counted(user) == expected(user, added, read_up_to[user]), user

    # Events after that count again, for those who may see them only.
    for sid in ("board", "legal", "news"):
        added[world.add_event(sid, f"{sid} unread later {keyword(sid)}")] = sid
    for user in USERS:
        assert counted(user) == expected(user, added, read_up_to[user]), user


@pytest.mark.parametrize("user", USERS)
def test_opml_lists_only_the_users_streams_under_their_token(
    world: World, saved: dict[str, int], user: str
) -> None:
    tokens: dict[str, str] = {}
    for name in USERS:
        with world.http(name) as client:
            tokens[name] = feed_token(streams_listing(client)["feeds"]["atom"])
    with world.http(user) as client:
        listing = streams_listing(client)
        res = client.get("/api/streams.opml")
    assert res.status_code == 200, res.text
    urls = [o.get("xmlUrl", "") for o in ET.fromstring(res.content).iter("outline")]
    assert sorted(urls) == sorted(s["feeds"]["atom"] for s in listing["streams"])
    assert {feed_token(url) for url in urls} == {tokens[user]}
    ids = {int(url.rpartition("/")[2].removesuffix(".atom")) for url in urls}
    assert saved[user] in ids
    assert ids.isdisjoint(saved[other] for other in USERS if other != user)
    assert not any(tokens[other] in res.text for other in USERS if other != user)
    with world.http() as reader:  # the URLs work, and show what the user may see
        [everything] = [url for url in urls if url.endswith(f"/{saved[user]}.atom")]
        got = feed_ids(reader, {"atom": everything})["atom"]
        assert set(got) == world.visible_ids(user)


@pytest.mark.parametrize("user", USERS)
def test_as2_export_is_404_when_not_visible(world: World, user: str) -> None:
    with world.http(user) as client:
        for event_id, (sid, res) in each_event(world, client, user, ".as2").items():
            assert res.headers["content-type"].startswith("application/activity+json")
            body = res.json()
            assert body["id"] == f"{world.app.base}/api/events/{event_id}.as2"
            assert body["actor"] == {"type": "Service", "name": sid}  # no author: the source


@pytest.mark.parametrize("user", USERS)
def test_ranked_search_finds_only_visible_events(world: World, user: str) -> None:
    titles = world.titles()
    visible = world.visible_ids(user)
    with world.http(user) as client:

        def found(query: str, limit: int = 500) -> list[int]:
            """Every id /api/search answers, page by page, in the order received."""
            ids: list[int] = []
            offset: int | None = 0
            while offset is not None:
                res = client.get(
                    "/api/search", params={"q": query, "limit": limit, "offset": offset}
                )
                assert res.status_code == 200, (query, res.text)
                ids += [e["id"] for e in res.json()["events"]]
                offset = res.json()["next_offset"]
                assert len(ids) <= len(titles), "paging did not end"
            return ids

        for sid in sorted(ALL):
            words = {i for i, title in titles.items() if keyword(sid) in title}
            assert set(found(keyword(sid))) == words & visible, (user, sid)
            assert set(found(f'"{sid} memo 1"')) == {
                i for i in visible if titles[i] == f"{sid} memo 1 {keyword(sid)}"
            }
        memos = found("memo", limit=2)  # ranked, across pages: no repeats, no leaks
        assert len(memos) == len(set(memos))
        assert set(memos) == {i for i in visible if " memo " in titles[i]}
        # Words OR a source: the ranked ones first, then the rest; all visible.
        either = found(f"{keyword('board')} OR source:news")
        board_words = {i for i, title in titles.items() if keyword("board") in title}
        news = {i for i, sid in world.truth().items() if sid == "news"}
        assert set(either) == visible & (board_words | news)
        assert found(EVERY_SOURCE) == sorted(visible, reverse=True)  # no free text: newest first


# --- without credentials, or with dead ones ----------------------------------------


async def test_no_credentials_get_401_never_a_redirect(world: World) -> None:
    with world.http() as anonymous:  # a loopback client: setup mode is over
        for path in ("/api/events", "/api/events/1", "/api/sources", "/api/events?q=kwnews"):
            res = anonymous.get(path)
            assert res.status_code == 401, path
            assert res.headers["content-type"].startswith("application/json")
            assert "location" not in res.headers and "error" in res.json()
            assert res.headers["www-authenticate"].startswith("Bearer")
        page = anonymous.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        bogus = anonymous.get("/api/events", headers={"Authorization": "Bearer tid_nope"})
        assert bogus.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with world.ws():
            pass
    assert refused.value.response.status_code == 401


async def test_a_disabled_user_can_do_nothing(world: World) -> None:
    with world.http(DISABLED) as client:
        for path in ("/api/events", "/api/sources", f"/api/events/{min(world.truth())}"):
            assert client.get(path).status_code == 401, path
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with world.ws(DISABLED):
            pass
    assert refused.value.response.status_code == 401
    with httpx2.Client(base_url=world.app.base) as browser:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text)
        assert csrf
        res = browser.post(
            "/login", data={"name": DISABLED, "password": PASSWORD, "csrf_token": csrf.group(1)}
        )
        assert res.status_code == 400 and "Wrong user name or password" in res.text


# --- rules that change while sockets are open ------------------------------------------


@pytest.fixture
def live_world(tmp_path: Path) -> Iterator[World]:
    people = {
        "root": (True, []),
        "lena": (False, ["legal"]),
        "dora": (False, ["legal"]),  # disabled while connected
        "tom": (False, []),  # token revoked while connected
        "gus": (False, ["hr"]),  # deleted while connected
    }
    built = build_world(tmp_path, {k: v for k, v in people.items() if k != DISABLED})
    now = datetime.now(UTC)
    built.store.people.create_user(
        DISABLED, password_hash=None, groups=["legal"], actor="test", now=now
    )
    built.tokens[DISABLED] = built.store.people.create_token(DISABLED, "t", actor="t", now=now)
    built.app.start()
    try:
        yield built
    finally:
        built.app.stop()
        built.store.close()


async def test_removal_from_a_group_applies_to_an_open_subscription(live_world: World) -> None:
    world, people = live_world, live_world.store.people
    with world.http("lena") as client:
        streams = save_streams(client, {"everything": EVERY_SOURCE, "legal": "source:legal"})
    saved_after = max(world.truth())
    async with world.ws("lena") as lena:
        await subscribe(lena, "all")
        await subscribe(lena, "legal", "source:legal")
        first = world.add_event("legal", "legal before")
        got = await events_until(lena, lambda m: m["stream"] == "legal")
        assert [(m["stream"], m["event"]["id"]) for m in got] == [("all", first), ("legal", first)]

        people.remove_member("legal", "lena", actor="test", now=datetime.now(UTC))
        # The server learns of it only from the store's revision (no request
        # prompts it). An `everyone` event committed after the removal is
        # ordered after it: once it arrives, the removal has been applied.
        world.add_event("news", "after removal")
        await events_until(lena, titled("after removal"))
        world.add_event("legal", "legal after")
        world.add_event("joint", "joint after")
        world.add_event("news", "sentinel 1")
        got = await events_until(lena, titled("sentinel 1"))
        assert [(m["stream"], m["event"]["title"]) for m in got] == [("all", "sentinel 1")]

        # The connection stays open for what remains visible, and a re-added
        # member sees the group's events again without reconnecting.
        people.add_member("legal", "lena", actor="test", now=datetime.now(UTC))
        world.add_event("news", "after re-adding")
        await events_until(lena, titled("after re-adding"))
        world.add_event("legal", "legal again")
        got = await events_until(
            lena, lambda m: m["stream"] == "legal" and m["event"]["title"] == "legal again"
        )
        assert [(m["stream"], m["event"]["title"]) for m in got] == [
            ("all", "legal again"),
            ("legal", "legal again"),
        ]

    # And every other path agrees: history, personal feeds and unread counts.
    def lena_sees(allowed: set[str]) -> None:
        visible = {i for i, s in world.truth().items() if s in allowed}
        with world.http("lena") as client:
            sources = {e["source_id"] for e in client.get("/api/events").json()["events"]}
            assert sources == allowed
            listing = streams_listing(client)
            counts = unread_counts(client)
        [everything] = [s for s in listing["streams"] if s["id"] == streams["everything"]]
        newest_first = sorted(visible, reverse=True)
        with world.http() as reader:
            for urls in (everything["feeds"], listing["feeds"]):
                assert feed_ids(reader, urls) == dict.fromkeys(FORMATS, newest_first)
        arrived = {i: s for i, s in world.truth().items() if i > saved_after and s in allowed}
        assert counts == {
            "everything": len(arrived),
            "legal": sum(s == "legal" for s in arrived.values()),
        }

    lena_sees({"news", "legal", "joint"})  # a member again
    people.remove_member("legal", "lena", actor="test", now=datetime.now(UTC))
    lena_sees({"news"})


async def test_sockets_close_with_1008_when_their_credential_dies(live_world: World) -> None:
    world, people = live_world, live_world.store.people
    async with world.ws(DISABLED) as dora, world.ws("tom") as tom, world.ws("gus") as gus:
        for ws in (dora, tom, gus):
            await subscribe(ws, "all")
        world.add_event("news", "hello all")
        for ws in (dora, tom, gus):
            await events_until(ws, titled("hello all"))

        people.update_user(DISABLED, disabled=True, actor="test", now=datetime.now(UTC))
        assert await close_code(dora) == 1008

        [token] = people.tokens("tom")
        people.revoke_token(token.id, actor="test", now=datetime.now(UTC))
        assert await close_code(tom) == 1008

        people.delete_user("gus", actor="test", now=datetime.now(UTC))
        assert await close_code(gus) == 1008


async def test_setup_mode_ends_when_the_first_account_exists(tmp_path: Path) -> None:
    world = build_world(tmp_path, {})
    with world.app:
        async with world.ws() as local:  # loopback, no accounts: the setup admin
            await subscribe(local, "all", cursor=0)
            got = await events_until(local, lambda m: m["event"]["source_id"] == "joint")
            assert {m["event"]["source_id"] for m in got} >= {"news", "board"}
            with world.http() as anonymous:
                assert anonymous.get("/api/events").status_code == 200
                proxied = anonymous.get("/api/events", headers={"X-Forwarded-For": "10.9.8.7"})
                assert proxied.status_code == 401  # setup mode is for this machine only
                world.store.people.create_user(
                    "first", password_hash=None, admin=True, actor="test", now=datetime.now(UTC)
                )
                res = anonymous.get("/api/events")
                assert res.status_code == 401 and "location" not in res.headers
            assert await close_code(local) == 1008
        with pytest.raises(websockets.InvalidStatus):
            async with world.ws():
                pass
    world.store.close()
