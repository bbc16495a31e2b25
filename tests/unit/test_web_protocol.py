"""The REST and websocket contract, in-process (Starlette's TestClient on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from aggregator.config import parse_config
from aggregator.decide import prepare
from aggregator.store import Store
from aggregator.types import EventData
from tests.stores import store_url
from web.app import create_app

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
            "sources": [
                {"id": "wiki", "kind": "feed", "url": "https://e.org/w", "title": "The Wiki"},
                {"id": "jira", "kind": "feed", "url": "https://e.org/j"},
            ],
        }
    )
    store = Store(config.store_url)
    store.sync_sources(config.sources, NOW)
    for src in config.sources:
        items = [
            EventData(
                external_id=f"{src.id}-{i}",
                title=f"{src.id} item {i}",
                content_html=f"<p>About <b>{src.id}</b> {i}</p>",
            )
            for i in range(30)
        ]
        if src.id == "wiki":  # the newest item carries a podcast episode and a bad link
            files = [
                {
                    "url": "https://e.org/media/ep%201.mp3",
                    "type": "audio/mpeg",
                    "length": 28_000_000,
                },
                {"url": "javascript:alert(1)", "type": "text/html", "length": None},
            ]
            items[-1] = EventData(
                external_id="wiki-29", title="Episode", extra={"attachments": files}
            )
        store.record_poll(src, prepare(items), state=None, now=NOW, next_poll_at=NOW)
    store.close()
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as c:
        yield c


def test_history_pages_newest_first_until_null_cursor(client: TestClient) -> None:
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/events", params=params).json()
        seen += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(60, 0, -1))


def test_history_filters_clamps_and_rejects(client: TestClient) -> None:
    body = client.get("/api/events", params={"q": "source:wiki", "limit": 100}).json()
    assert {e["source_id"] for e in body["events"]} == {"wiki"} and len(body["events"]) == 30
    assert len(client.get("/api/events", params={"limit": 10_000}).json()["events"]) == 60
    phrase = client.get("/api/events", params={"q": '-source:wiki "item 7"'}).json()["events"]
    assert [e["external_id"] for e in phrase] == ["jira-7"]
    bad = client.get("/api/events", params={"q": "colour:red"})
    assert bad.status_code == 400 and "colour" in bad.json()["error"]
    assert client.get("/api/events", params={"cursor": "abc"}).status_code == 400


def test_single_event_and_sources(client: TestClient) -> None:
    event = client.get("/api/events/1").json()
    assert event["id"] == 1 and event["summary"] == "About wiki 0"
    assert client.get("/api/events/999").status_code == 404
    sources = {s["id"]: s for s in client.get("/api/sources").json()["sources"]}
    assert sources["wiki"]["event_count"] == 30 and sources["wiki"]["title"] == "The Wiki"


def test_dashboard_renders_escaped_with_source_names(client: TestClient) -> None:
    page = client.get("/", params={"q": 'source:wiki "<script>"'})
    assert page.status_code == 200
    assert '<script>"' not in page.text and "&lt;script&gt;" in page.text
    page = client.get("/", params={"q": "source:wiki"})
    assert "The Wiki" in page.text and "jira item" not in page.text
    assert client.get("/", params={"q": "bogus:1"}).status_code == 400


def test_attachments_in_the_first_page_and_the_api(client: TestClient) -> None:
    page = client.get("/", params={"q": "source:wiki"}).text
    assert '<a href="https://e.org/media/ep%201.mp3" rel="noopener noreferrer">ep 1.mp3</a>' in page
    assert '<span class="attachment-about">audio/mpeg, 28 MB</span>' in page
    assert "javascript:" not in page
    [event] = client.get("/api/events", params={"q": "Episode", "limit": 1}).json()["events"]
    assert event["attachments"] == [
        {"url": "https://e.org/media/ep%201.mp3", "type": "audio/mpeg", "length": 28_000_000}
    ]


def test_websocket_protocol_errors_keep_the_connection(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text("not json")
        assert ws.receive_json() == {"type": "error", "message": "message is not JSON"}
        ws.send_json({"type": "dance"})
        assert "unknown message type" in ws.receive_json()["message"]
        ws.send_json({"type": "subscribe", "stream": "s", "query": "", "cursor": "x"})
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "subscribe", "stream": "s", "query": "colour:red", "cursor": None})
        error = ws.receive_json()
        assert error["type"] == "error" and "colour" in error["message"]
        # Refused before any work: a query's cost grows with its length.
        ws.send_json({"type": "subscribe", "stream": "s", "query": "(" * 60_000, "cursor": 0})
        error = ws.receive_json()
        assert "at most 2000 characters" in error["message"] and error["position"] == 2000
        far = "since:0001-01-01T00:00+01:00"  # out of datetime's range once in UTC
        ws.send_json({"type": "subscribe", "stream": "s", "query": far, "cursor": 0})
        assert "since: expects" in ws.receive_json()["message"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # still open after every error


def test_websocket_replays_after_cursor_oldest_first(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "subscribe", "stream": "w", "query": "source:wiki", "cursor": 20})
        assert ws.receive_json() == {"type": "subscribed", "stream": "w"}
        ids = [ws.receive_json()["event"]["id"] for _ in range(10)]
        assert ids == list(range(21, 31))


def test_security_headers(client: TestClient) -> None:
    for path in ("/", "/api/events", "/static/app.js"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_websocket_rejects_binary_frames_and_non_string_queries(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["message"] == "send JSON in text frames"
        ws.send_json({"type": "subscribe", "stream": "s", "query": 5, "cursor": None})
        assert ws.receive_json() == {
            "type": "error", "stream": "s", "message": "query must be a string",
        }  # fmt: skip
        ws.send_json({"type": "subscribe", "stream": "s", "query": "source:", "cursor": None})
        assert ws.receive_json()["type"] == "error"


def test_a_cursor_beyond_the_store_is_clamped(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "subscribe", "stream": "s", "query": "", "cursor": 10_000})
        assert ws.receive_json() == {"type": "subscribed", "stream": "s"}
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # nothing replayed, stream alive


def test_the_largest_page_still_says_whether_another_follows(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path, "big")},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
            "sources": [{"id": "s", "kind": "feed", "url": "https://e.org/s"}],
        }
    )
    store = Store(config.store_url)
    store.sync_sources(config.sources, NOW)
    items = [EventData(external_id=str(i), title=f"t{i}") for i in range(600)]
    store.record_poll(config.sources[0], prepare(items), state=None, now=NOW, next_poll_at=NOW)
    store.close()
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as c:
        first = c.get("/api/events", params={"limit": 10_000}).json()
        assert len(first["events"]) == 500 and first["next_cursor"] == first["events"][-1]["id"]
        rest = c.get("/api/events", params={"limit": 500, "cursor": first["next_cursor"]}).json()
        assert len(rest["events"]) == 100 and rest["next_cursor"] is None


def test_unknown_hosts_are_refused(client: TestClient) -> None:
    # DNS rebinding: a page on evil.example resolving to this server.
    assert client.get("/api/events", headers={"Host": "evil.example"}).status_code == 400
