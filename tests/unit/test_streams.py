"""Saved streams: the store's rules (names, queries, order, read marks, unread
counts, feed tokens) and the REST API over them, in-process on SQLite."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.testclient import TestClient

from aggregator.config import SourceConfig, parse_config
from aggregator.decide import prepare
from aggregator.store import Store
from aggregator.store.schema import streams as streams_table
from aggregator.store.streams import MAX_NAME, StreamError, UnknownStreamError
from aggregator.types import EventData
from tests.stores import store_url
from web.app import create_app

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BASE = "http://testserver"
# pub: everyone; sec: group legal; ops: group ops. ada is an admin, max is in
# legal, eve in ops, zoe in no group.
SOURCES = [
    {"id": "pub", "kind": "feed", "url": "https://e.org/p"},
    {"id": "sec", "kind": "feed", "url": "https://e.org/s", "audience": ["legal"]},
    {"id": "ops", "kind": "feed", "url": "https://e.org/o", "audience": ["ops"]},
]
USERS = {"ada": (True, []), "max": (False, ["legal"]), "eve": (False, ["ops"]), "zoe": (False, [])}


@dataclass
class World:
    """A running app with four users, each with an API token, and three sources."""

    client: TestClient
    app: Starlette
    tokens: dict[str, str]
    sources: dict[str, SourceConfig]
    clock: Iterator[int] = field(default_factory=lambda: count(1))

    @property
    def store(self) -> Store:
        store: Store = self.app.state.tidings.store
        return store

    def uid(self, name: str) -> int:
        user = self.store.people.user(name)
        assert user is not None
        return user.id

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def get(self, path: str, user: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth(user), **kw)

    def post(self, path: str, user: str, body: Any = None, **kw: Any) -> Any:
        return self.client.post(path, headers=self.auth(user), json=body, **kw)

    def add(self, source_id: str, *items: EventData | str) -> list[int]:
        """Ingest items (a str is a title) as a poll would; the new ids. Each
        call is a minute later than the one before."""
        data = [i if isinstance(i, EventData) else EventData(external_id=i, title=i) for i in items]
        when = NOW + timedelta(minutes=next(self.clock))
        return self.store.record_poll(
            self.sources[source_id], prepare(data), state=None, now=when, next_poll_at=when
        )

    def new_stream(self, user: str, name: str, query: str = "") -> dict[str, Any]:
        res = self.post("/api/streams", user, {"name": name, "query": query})
        assert res.status_code == 201, res.text
        body: dict[str, Any] = res.json()
        return body


MakeWorld = Callable[..., World]


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[MakeWorld]:
    clients: list[TestClient] = []

    def make(*, users: bool = True) -> World:
        config = parse_config(
            {
                "store": {"url": store_url(tmp_path, f"w{len(clients)}")},
                "server": {"allowed_hosts": ["testserver"]},
                "poller": {"enabled": False},
                "sources": SOURCES,
            }
        )
        store = Store(config.store_url)
        store.sync_sources(config.sources, NOW)
        tokens: dict[str, str] = {}
        if users:
            for name, (admin, groups) in USERS.items():
                store.people.create_user(
                    name, password_hash=None, admin=admin, groups=groups, actor="t", now=NOW
                )
                tokens[name] = store.people.create_token(name, "t", actor="t", now=NOW)
        store.close()
        app = create_app(config)
        client = TestClient(app, base_url=BASE, client=("127.0.0.1", 50000))
        client.__enter__()
        clients.append(client)
        return World(client, app, tokens, {s.id: s for s in config.sources})

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return make_world()


def unread(world: World, user: str) -> dict[str, int | None]:
    return {s["name"]: s["unread"] for s in world.get("/api/streams", user).json()["streams"]}


# --- the REST API -------------------------------------------------------------


def test_create_and_list_with_absolute_feed_urls(world: World) -> None:
    made = world.new_stream("max", "Legal news", "source:sec")
    token = world.store.streams.feed_token(world.uid("max"))
    assert made["feeds"] == {
        fmt: f"{BASE}/feeds/{token}/{made['id']}.{fmt}" for fmt in ("atom", "rss", "json")
    }
    world.new_stream("max", "Everything")
    body = world.get("/api/streams", "max").json()
    assert [(s["name"], s["query"], s["unread"]) for s in body["streams"]] == [
        ("Legal news", "source:sec", 0),
        ("Everything", "", 0),
    ]
    assert body["streams"][0]["feeds"] == made["feeds"]
    assert body["feeds"]["atom"] == f"{BASE}/feeds/{token}/all.atom"
    one = world.get(f"/api/streams/{made['id']}", "max").json()
    assert one["name"] == "Legal news" and one["feeds"] == made["feeds"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "query": ""}, "name"),
        ({"name": "   ", "query": ""}, "name"),
        ({"name": "x" * (MAX_NAME + 1), "query": ""}, "name"),
        ({"name": "tab\there", "query": ""}, "name"),
        ({"name": "not a character \uffff", "query": ""}, "name"),  # XML (OPML) cannot carry it
        ({"query": "source:pub"}, "name"),
        ({"name": 7, "query": ""}, "name"),
        ({"name": "ok", "query": ["source:pub"]}, "query"),
        ({"name": "ok", "query": "x" * 5000}, "query"),
    ],
)
def test_bad_input_names_the_field(world: World, body: dict[str, Any], field: str) -> None:
    res = world.post("/api/streams", "max", body)
    assert res.status_code == 400, res.text
    assert res.json()["field"] == field and res.json()["error"]


def test_a_bad_query_points_at_its_position(world: World) -> None:
    res = world.post("/api/streams", "max", {"name": "bad", "query": "source:pub ("})
    assert res.status_code == 400
    body = res.json()
    assert body["field"] == "query" and isinstance(body["position"], int)
    assert 0 <= body["position"] <= len("source:pub (")
    assert world.get("/api/streams", "max").json()["streams"] == []


def test_bodies_that_are_not_json_objects_are_refused(world: World) -> None:
    for content in (b"not json", b"[1, 2]", b'"name"', b"\xff\xfe"):
        res = world.client.post("/api/streams", headers=world.auth("max"), content=content)
        assert res.status_code == 400 and "JSON object" in res.json()["error"]


def test_names_are_unique_per_user_without_case(world: World) -> None:
    world.new_stream("max", "Straße")
    for twin in ("STRASSE", "straße ", "Straße"):
        res = world.post("/api/streams", "max", {"name": twin, "query": ""})
        assert res.status_code == 400 and res.json()["field"] == "name", twin
    world.new_stream("eve", "Straße")  # another user's names are no obstacle
    other = world.new_stream("max", "Other")
    clash = world.client.patch(
        f"/api/streams/{other['id']}", headers=world.auth("max"), json={"name": "strasse"}
    )
    assert clash.status_code == 400 and clash.json()["field"] == "name"
    # Renaming a stream to its own name in another case is fine.
    same = world.client.patch(
        f"/api/streams/{other['id']}", headers=world.auth("max"), json={"name": "OTHER"}
    )
    assert same.status_code == 200 and same.json()["name"] == "OTHER"


def test_patch_renames_or_requeries_and_delete_removes(world: World) -> None:
    made = world.new_stream("max", "First", "source:pub")
    path = f"/api/streams/{made['id']}"
    patch = world.client.patch
    res = patch(path, headers=world.auth("max"), json={"query": "source:sec"})
    assert res.status_code == 200 and res.json()["query"] == "source:sec"
    assert res.json()["name"] == "First"
    res = patch(path, headers=world.auth("max"), json={"name": "Renamed"})
    assert (res.json()["name"], res.json()["query"]) == ("Renamed", "source:sec")
    assert patch(path, headers=world.auth("max"), json={}).status_code == 400
    bad = patch(path, headers=world.auth("max"), json={"query": "("})
    assert bad.status_code == 400 and "position" in bad.json()
    assert world.client.delete(path, headers=world.auth("max")).status_code == 204
    assert world.client.delete(path, headers=world.auth("max")).status_code == 404
    assert world.get(path, "max").status_code == 404
    assert world.get("/api/streams", "max").json()["streams"] == []


def test_another_users_stream_is_not_found(world: World) -> None:
    mine = world.new_stream("max", "Mine", "source:pub")
    path = f"/api/streams/{mine['id']}"
    eve = world.auth("eve")
    assert world.get(path, "eve").status_code == 404
    assert world.client.patch(path, headers=eve, json={"name": "taken"}).status_code == 404
    assert world.client.delete(path, headers=eve).status_code == 404
    assert world.post(f"{path}/read", "eve", {"up_to": 1}).status_code == 404
    # Not even an admin reaches into someone's streams through this API.
    assert world.get(path, "ada").status_code == 404
    assert world.get("/api/streams", "eve").json()["streams"] == []
    assert world.get(path, "max").json()["name"] == "Mine"
    for junk in ("abc", "-1", "9" * 40, "1e3"):
        assert world.get(f"/api/streams/{junk}", "max").status_code == 404, junk


def test_streams_need_credentials(world: World) -> None:
    assert world.client.get("/api/streams").status_code == 401
    res = world.client.post("/api/streams", json={"name": "x", "query": ""})
    assert res.status_code == 401
    assert world.client.post("/api/feed-token/rotate").status_code == 401
    assert world.client.get("/api/streams.opml").status_code == 401


def test_setup_mode_lists_no_streams_and_makes_none(make_world: MakeWorld) -> None:
    world = make_world(users=False)
    assert world.client.get("/api/streams").json() == {"streams": [], "feeds": None}
    # Setup mode counts as a browser: changes carry the session's CSRF token.
    page = world.client.get("/login").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    headers = {"X-CSRF-Token": match.group(1)}
    res = world.client.post("/api/streams", json={"name": "x"}, headers=headers)
    assert res.status_code == 403 and "account" in res.json()["error"]
    assert world.client.post("/api/feed-token/rotate", headers=headers).status_code == 403


def test_reorder(world: World) -> None:
    ids = [world.new_stream("max", name)["id"] for name in ("a", "b", "c")]
    put = world.client.put
    res = put("/api/streams/order", headers=world.auth("max"), json={"ids": ids[::-1]})
    assert res.status_code == 204
    names = [s["name"] for s in world.get("/api/streams", "max").json()["streams"]]
    assert names == ["c", "b", "a"]
    theirs = world.new_stream("eve", "e")["id"]
    for bad in (ids[:2], [*ids, ids[0]], [*ids[:2], theirs], "1,2,3", [True, 2, 3]):
        res = put("/api/streams/order", headers=world.auth("max"), json={"ids": bad})
        assert res.status_code == 400 and res.json()["field"] == "ids", bad
    # A stream made after reordering goes last.
    world.new_stream("max", "d")
    names = [s["name"] for s in world.get("/api/streams", "max").json()["streams"]]
    assert names == ["c", "b", "a", "d"]


# --- unread counts and read marks -------------------------------------------------


def test_a_new_stream_starts_with_nothing_unread(world: World) -> None:
    world.add("pub", "old one", "old two")
    made = world.new_stream("max", "All")
    assert made["unread"] == 0 and unread(world, "max") == {"All": 0}
    world.add("pub", "new one")
    assert unread(world, "max") == {"All": 1}
    assert world.get(f"/api/streams/{made['id']}", "max").json()["unread"] == 1


def test_unread_counts_only_what_the_member_may_see(world: World) -> None:
    for user in ("ada", "max", "eve", "zoe"):
        world.new_stream(user, "All")
        world.new_stream(user, "Legal", "source:sec")
    world.add("pub", "p1", "p2")
    world.add("sec", "s1", "s2", "s3")
    world.add("ops", "o1")
    assert unread(world, "ada") == {"All": 6, "Legal": 3}
    assert unread(world, "max") == {"All": 5, "Legal": 3}
    assert unread(world, "eve") == {"All": 3, "Legal": 0}  # sec is legal's
    assert unread(world, "zoe") == {"All": 2, "Legal": 0}
    # Rights are read at every request: leaving the group takes the count away.
    world.store.people.remove_member("legal", "max", actor="t", now=NOW)
    assert unread(world, "max") == {"All": 2, "Legal": 0}


def test_mark_read_never_moves_back_nor_past_the_newest_event(world: World) -> None:
    stream = world.new_stream("max", "All")
    path = f"/api/streams/{stream['id']}/read"
    ids = world.add("pub", "a", "b", "c", "d")
    res = world.post(path, "max", {"up_to": ids[2]})
    assert res.json() == {"id": stream["id"], "last_read_id": ids[2]}
    assert unread(world, "max") == {"All": 1}
    assert world.post(path, "max", {"up_to": ids[0]}).json()["last_read_id"] == ids[2]
    assert unread(world, "max") == {"All": 1}
    huge = world.post(path, "max", {"up_to": 2**62}).json()["last_read_id"]
    assert huge == ids[3]  # a read mark beyond the newest would hide what comes next
    world.add("pub", "e")
    assert unread(world, "max") == {"All": 1}
    for bad in ({"up_to": -1}, {"up_to": "x"}, {"up_to": True}, {"up_to": 1.5}):
        res = world.post(path, "max", bad)
        assert res.status_code == 400 and res.json()["field"] == "up_to", bad


def test_a_new_query_starts_with_nothing_unread_a_new_name_keeps_the_count(
    world: World,
) -> None:
    stream = world.new_stream("max", "All", "source:sec")
    world.add("pub", "p1", "p2")
    world.add("sec", "s1")
    path = f"/api/streams/{stream['id']}"
    assert (
        world.client.patch(path, headers=world.auth("max"), json={"name": "N"}).json()["unread"]
        == 1
    )
    changed = world.client.patch(path, headers=world.auth("max"), json={"query": "source:pub"})
    assert changed.json()["unread"] == 0  # p1 and p2 are history to the new query
    world.add("pub", "p3")
    assert unread(world, "max") == {"N": 1}


def test_read_marks_never_reveal_a_hidden_event(world: World) -> None:
    """A mark is never set to an id the user may not see: it would tell them
    that a hidden source had activity, and how much."""
    [seen] = world.add("pub", "a")
    [hidden] = world.add("sec", "s")  # zoe may not see sec
    stream = world.new_stream("zoe", "All")
    assert stream["last_read_id"] == seen < hidden
    res = world.post(f"/api/streams/{stream['id']}/read", "zoe", {"up_to": 2**62})
    assert res.json()["last_read_id"] == seen
    assert world.new_stream("max", "All")["last_read_id"] == hidden  # max may see sec


def test_mark_read_without_up_to_reads_everything_visible(world: World) -> None:
    stream = world.new_stream("eve", "All")
    world.add("pub", "a")
    world.add("ops", "b")
    res = world.post(f"/api/streams/{stream['id']}/read", "eve", {})
    assert res.status_code == 200
    assert unread(world, "eve") == {"All": 0}


def test_unread_counting_stops_above_the_cap(world: World) -> None:
    made = world.store.streams.create(world.uid("max"), "All", "", now=NOW, viewer=None)
    world.add("pub", *[f"e{i}" for i in range(7)])
    streams = world.store.streams
    assert streams.unread_counts(world.uid("max"), viewer=None, cap=3) == {made.id: 4}
    assert streams.unread_counts(world.uid("max"), viewer=None, cap=10) == {made.id: 7}
    assert streams.unread_counts(world.uid("max"), viewer=None, cap=7) == {made.id: 7}


def test_the_api_reports_a_capped_count(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("web.streams.UNREAD_CAP", 2)
    streams = world.store.streams
    monkeypatch.setattr(
        streams, "unread_counts", lambda uid, viewer, cap=2: {s.id: 3 for s in streams.list(uid)}
    )
    world.new_stream("max", "All")
    [listed] = world.get("/api/streams", "max").json()["streams"]
    assert (listed["unread"], listed["unread_more"]) == (2, True)


def test_a_saved_query_that_no_longer_parses_is_reported_not_fatal(world: World) -> None:
    made = world.new_stream("max", "Old", "source:pub")
    with world.store._write.begin() as conn:
        conn.execute(update(streams_table).values(query="("))
    [listed] = world.get("/api/streams", "max").json()["streams"]
    assert listed["unread"] is None and listed["id"] == made["id"]
    assert world.client.get(made["feeds"]["atom"]).status_code == 422


# --- the store's rules ----------------------------------------------------------


def test_store_refuses_what_the_api_refuses(world: World) -> None:
    streams = world.store.streams
    uid = world.uid("max")
    with pytest.raises(StreamError) as err:
        streams.create(uid, "x", "source:pub (", now=NOW, viewer=None)
    assert err.value.field == "query" and err.value.position is not None
    with pytest.raises(StreamError, match="no user"):
        streams.create(10_000, "x", "", now=NOW, viewer=None)
    made = streams.create(uid, "  padded  ", "", now=NOW, viewer=None)
    assert made.name == "padded"
    with pytest.raises(UnknownStreamError):
        streams.update(world.uid("eve"), made.id, now=NOW, viewer=None, name="mine now")
    with pytest.raises(UnknownStreamError):
        streams.delete(world.uid("eve"), made.id)
    with pytest.raises(UnknownStreamError):
        streams.mark_read(world.uid("eve"), made.id, 1, viewer=None)
    assert streams.get(world.uid("eve"), made.id) is None
    assert streams.get(uid, made.id) == made


def test_deleting_a_user_deletes_their_streams(world: World) -> None:
    uid = world.uid("zoe")
    world.new_stream("zoe", "Mine")
    world.store.people.delete_user("zoe", actor="t", now=NOW)
    assert world.store.streams.list(uid) == []


# --- feed tokens ----------------------------------------------------------------


def test_feed_tokens_are_per_user_stable_and_rotate(world: World) -> None:
    streams = world.store.streams
    max_id, eve_id = world.uid("max"), world.uid("eve")
    token = streams.feed_token(max_id)
    assert token == streams.feed_token(max_id) != streams.feed_token(eve_id)
    prefix, _, mac = token.partition(".")
    assert prefix == str(max_id) and len(mac) == 32
    assert streams.user_for_feed_token(token) == max_id
    new = streams.rotate_feed_token(max_id)
    assert new != token and streams.feed_token(max_id) == new
    assert streams.user_for_feed_token(token) is None
    assert streams.user_for_feed_token(new) == max_id
    assert streams.rotate_feed_token(max_id) != new  # every rotation is a new token
    # The key is kept in the store: another Store object gives the same tokens.
    other = Store(world.store.url)
    try:
        assert other.streams.feed_token(eve_id) == streams.feed_token(eve_id)
    finally:
        other.close()


@pytest.mark.parametrize(
    "forged",
    ["", ".", "abc", "1.", "1", "x.y", "\u0661.abc", "99999999999999999999999.abc", "1.ab\u00e9"],
)
def test_malformed_feed_tokens_match_nobody(world: World, forged: str) -> None:
    assert world.store.streams.user_for_feed_token(forged) is None


def test_a_token_moved_to_another_user_id_matches_nobody(world: World) -> None:
    streams = world.store.streams
    _, _, mac = streams.feed_token(world.uid("max")).partition(".")
    assert streams.user_for_feed_token(f"{world.uid('eve')}.{mac}") is None
    # One character changed, to one it is not (1 in 64 tokens already end in "A").
    other = "B" if mac.endswith("A") else "A"
    assert streams.user_for_feed_token(f"{world.uid('max')}.{mac[:-1]}{other}") is None


def test_rotating_through_the_api(world: World) -> None:
    made = world.new_stream("max", "All")
    res = world.post("/api/feed-token/rotate", "max")
    assert res.status_code == 200
    new = world.store.streams.feed_token(world.uid("max"))
    assert res.json()["feeds"]["json"] == f"{BASE}/feeds/{new}/all.json"
    [listed] = world.get("/api/streams", "max").json()["streams"]
    assert listed["feeds"]["atom"] == f"{BASE}/feeds/{new}/{made['id']}.atom"
    assert listed["feeds"] != made["feeds"]
