"""The `jsonapi` kind against a real loopback HTTP server: every pagination
style, POST bodies, incremental polls, bad input, and whole polls through the
poller into a real store (events and state committed together)."""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from aggregator.config import load_config, parse_source
from aggregator.connector import HttpSettings, PollContext, Resources
from aggregator.exceptions import ConfigError, FetchError, ParseError
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import JSONObject, PollResult
from connectors.jsonapi import JsonApiConnector, JsonApiOptions, link_next, same_origin
from tests.support import FeedServer, Resource, write_config

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
BASE = datetime(2026, 11, 1, tzinfo=UTC)
FIELDS = {
    "id": "id",
    "title": "title",
    "url": "link",
    "published": "created",
    "updated": "updated",
    "author": "user.name",
    "tags": "labels",
    "summary": "body",
    "verb": "action",
    "object_type": "kind",
}


def issue(n: int, title: str | None = None, **extra: Any) -> dict[str, Any]:
    when = (BASE + timedelta(hours=n)).isoformat().replace("+00:00", "Z")
    return {
        "id": n,
        "title": title or f"Issue {n}",
        "link": f"/issues/{n}",
        "created": when,
        "updated": when,
        "user": {"name": f"User {n}"},
        "labels": ["bug", f"p{n}"],
        "body": f"Body of {n}",
        "action": "Create",
        "kind": "Issue",
        **extra,
    }


def put_json(server: FeedServer, path: str, doc: Any, **kw: Any) -> None:
    server.put(path, json.dumps(doc), content_type="application/json", **kw)


def options(**raw: Any) -> JsonApiOptions:
    raw.setdefault("fields", FIELDS)
    source = parse_source({"id": "api", "kind": "jsonapi", **raw}, "source", "file")
    assert isinstance(source.options, JsonApiOptions)
    return source.options


async def run_cpu(fn: Callable[..., Any], *args: Any) -> Any:
    # As the parser pool does: arguments and result travel pickled.
    result = fn(*pickle.loads(pickle.dumps(args)))
    return pickle.loads(pickle.dumps(result))


@pytest.fixture
async def resources() -> AsyncIterator[Resources]:
    shared = Resources()
    yield shared
    await shared.aclose()


async def poll(
    resources: Resources,
    state: JSONObject | None = None,
    *,
    now: datetime = NOW,
    http: HttpSettings | None = None,
    local_dirs: tuple[Path, ...] = (),
    **raw: Any,
) -> PollResult:
    ctx = PollContext(
        source_id="api",
        now=now,
        resources=resources,
        run_cpu=run_cpu,
        http=http or HttpSettings(),
        local_dirs=local_dirs,
    )
    return await JsonApiConnector(options(**raw)).poll(state, ctx)


def paths(server: FeedServer) -> list[str]:
    return [p for p, _ in server.requests]


# --- pagination ------------------------------------------------------------------


async def test_link_header_pages_map_every_field(
    feed_server: FeedServer, resources: Resources
) -> None:
    url = feed_server.url("/api/issues")
    put_json(
        feed_server,
        "/api/issues",
        [issue(1), issue(2, action="Announce", kind="Note")],
        headers={"Link": '</api/issues?page=2>; rel="next", </api/issues?page=3>; rel="last"'},
    )
    put_json(
        feed_server,
        "/api/issues?page=2",
        [issue(3), issue(4)],
        headers={"Link": f'<{url}?page=1>; rel="prev", <{url}?page=3>; rel=next'},
    )
    put_json(feed_server, "/api/issues?page=3", [issue(5)])
    result = await poll(resources, url=url, pagination={"type": "link"})
    assert [e.title for e in result.events] == [f"Issue {n}" for n in range(1, 6)]
    assert paths(feed_server) == ["/api/issues", "/api/issues?page=2", "/api/issues?page=3"]
    assert feed_server.requests[0][1]["Accept"] == "application/json"
    first = result.events[0]
    assert first.external_id == "1" and first.url == feed_server.url("/issues/1")  # resolved
    assert first.actor.name == "User 1" and first.tags == ("bug", "p1")
    assert (first.summary, first.verb, first.object_type) == ("Body of 1", "Create", "Issue")
    assert first.published == BASE + timedelta(hours=1)
    assert (result.events[1].verb, result.events[1].object_type) == ("Announce", "Note")
    assert result.warning is None and result.state is not None and "mapping" in result.state


async def test_next_url_field(feed_server: FeedServer, resources: Resources) -> None:
    put_json(feed_server, "/n", {"data": [issue(1)], "links": {"next": "/n?after=1"}})
    put_json(feed_server, "/n?after=1", {"data": [issue(2)], "links": {"next": None}})
    result = await poll(
        resources,
        url=feed_server.url("/n"),
        items="data",
        pagination={"type": "next_url", "next": "links.next"},
    )
    assert [e.external_id for e in result.events] == ["1", "2"]
    assert paths(feed_server) == ["/n", "/n?after=1"]


async def test_cursor_pages_until_the_cursor_runs_out(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/c?team=x&limit=2", {"results": [issue(1), issue(2)], "next": "abc"})
    put_json(feed_server, "/c?team=x&limit=2&cursor=abc", {"results": [issue(3)], "next": ""})
    result = await poll(
        resources,
        url=feed_server.url("/c?team=x"),
        items="results",
        pagination={"type": "cursor", "next": "next", "param": "cursor",
                    "size_param": "limit", "size": 2},
    )  # fmt: skip
    assert [e.external_id for e in result.events] == ["1", "2", "3"]
    assert paths(feed_server) == ["/c?team=x&limit=2", "/c?team=x&limit=2&cursor=abc"]


async def test_offset_stops_at_the_total_without_asking_again(
    feed_server: FeedServer, resources: Resources
) -> None:
    for start in (0, 2):
        items = [issue(start + 1), issue(start + 2)]
        put_json(feed_server, f"/o?count=2&start={start}", {"total": 4, "values": items})
    result = await poll(
        resources,
        url=feed_server.url("/o"),
        items="values",
        pagination={"type": "offset", "param": "start", "size_param": "count", "size": 2,
                    "total": "total"},
    )  # fmt: skip
    assert [e.external_id for e in result.events] == ["1", "2", "3", "4"]
    assert paths(feed_server) == ["/o?count=2&start=0", "/o?count=2&start=2"]


async def test_page_numbers_stop_at_a_short_page(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/p?per_page=3&page=1", [issue(1), issue(2), issue(3)])
    put_json(feed_server, "/p?per_page=3&page=2", [issue(4)])
    result = await poll(
        resources,
        url=feed_server.url("/p"),
        pagination={"type": "page", "param": "page", "size_param": "per_page", "size": 3},
    )
    assert len(result.events) == 4
    assert paths(feed_server) == ["/p?per_page=3&page=1", "/p?per_page=3&page=2"]


async def test_more_false_ends_the_pages(feed_server: FeedServer, resources: Resources) -> None:
    put_json(feed_server, "/m", {"items": [issue(1)], "has_more": True, "next": "b"})
    put_json(feed_server, "/m?c=b", {"items": [issue(2)], "has_more": False, "next": "c"})
    result = await poll(
        resources,
        url=feed_server.url("/m"),
        items="items",
        pagination={"type": "cursor", "next": "next", "param": "c", "more": "has_more"},
    )
    assert len(result.events) == 2 and paths(feed_server) == ["/m", "/m?c=b"]


async def test_max_pages_caps_an_endless_chain(
    feed_server: FeedServer, resources: Resources
) -> None:
    for n in range(1, 8):
        put_json(
            feed_server, f"/e?p={n}", [issue(n)], headers={"Link": f'</e?p={n + 1}>; rel="next"'}
        )
    result = await poll(
        resources, url=feed_server.url("/e?p=1"), pagination={"type": "link", "max_pages": 3}
    )
    assert len(result.events) == 3 and len(feed_server.requests) == 3
    assert result.warning is None  # a plain listing is meant to be read only so far
    feed_server.requests.clear()
    since = await poll(
        resources,
        url=feed_server.url("/e?p=1"),
        pagination={"type": "link", "max_pages": 3},
        incremental={"since": "updated"},
    )
    assert len(feed_server.requests) == 3
    assert since.warning and "3 pages (pagination.max_pages); the next poll" in since.warning
    # Capped again without getting past the kept since value: stuck, and said so.
    stuck = await poll(
        resources,
        {"since": issue(9)["updated"]},
        url=feed_server.url("/e?p=1"),
        pagination={"type": "link", "max_pages": 3},
        incremental={"since": "updated"},
    )
    assert stuck.warning and "without getting past since" in stuck.warning


async def test_a_page_linking_back_and_another_origin_are_not_followed(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/loop", [issue(1)], headers={"Link": '</loop>; rel="next"'})
    looped = await poll(resources, url=feed_server.url("/loop"), pagination={"type": "link"})
    assert len(looped.events) == 1 and feed_server.hits("/loop") == 1
    assert looped.warning and "repeats an earlier page" in looped.warning
    # localhost is another origin than 127.0.0.1: the token must not go there.
    away = f"http://localhost:{feed_server.port}/stolen"
    put_json(feed_server, "/away", [issue(1)], headers={"Link": f'<{away}>; rel="next"'})
    moved = await poll(resources, url=feed_server.url("/away"), pagination={"type": "link"})
    assert feed_server.hits("/stolen") == 0
    assert moved.warning and "another server" in moved.warning


def test_link_headers_and_origins() -> None:
    header = '<https://a.example/x?page=3>; rel="last", <https://a.example/x?page=2>; rel="next"'
    assert link_next(header) == "https://a.example/x?page=2"
    assert link_next('<https://a.example/y>; title="a"; rel="prev next"') == "https://a.example/y"
    assert link_next('<https://a.example/z>; rel="prev"') is None and link_next(None) is None
    assert same_origin("http://h/a", "http://h:80/b") and same_origin("http://h/a", "https://h/b")
    assert not same_origin("https://h/a", "http://h/b")
    assert not same_origin("https://h/a", "https://h:8443/b")
    assert not same_origin("https://h/a", "https://evil.example/b")


# --- POST, incremental ---------------------------------------------------------


async def test_post_sends_the_body_with_since_and_pages_in_the_body(
    feed_server: FeedServer, resources: Resources
) -> None:
    issues = [issue(n) for n in range(1, 4)]

    def search(path: str, body: bytes) -> Resource:
        ask = json.loads(body)
        page = issues[ask["startAt"] : ask["startAt"] + ask["page"]["max"]]
        doc = {"total": len(issues), "issues": page}
        return Resource(body=json.dumps(doc).encode(), content_type="application/json")

    feed_server.on_post = search
    raw: dict[str, Any] = {
        "url": feed_server.url("/rest/search"),
        "method": "POST",
        "body": {"jql": "project = LAW AND updated >= '{since}'", "fields": ["summary"]},
        "items": "issues",
        "pagination": {"type": "offset", "param": "startAt", "size_param": "page.max",
                       "size": 2, "total": "total"},
        "incremental": {"since": "updated", "since_format": "%Y/%m/%d %H:%M",
                        "initial_since": "7d"},
    }  # fmt: skip
    first = await poll(resources, **raw)
    assert [e.external_id for e in first.events] == ["1", "2", "3"]
    sent = [json.loads(body) for _, body in feed_server.posted]
    assert [s["startAt"] for s in sent] == [0, 2] and sent[0]["page"] == {"max": 2}
    assert sent[0]["jql"] == "project = LAW AND updated >= '2026/11/13 12:00'"  # NOW - 7d
    assert sent[0]["fields"] == ["summary"]
    assert first.state is not None and first.state["since"] == issues[-1]["updated"]
    feed_server.posted.clear()
    await poll(resources, first.state, **raw)
    assert json.loads(feed_server.posted[0][1])["jql"].endswith("'2026/11/01 03:00'")


async def test_since_is_the_largest_value_and_is_sent_typed(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/s", [issue(3), issue(9), issue(4)])
    put_json(feed_server, "/s?since_id=9", [issue(10)])
    raw: dict[str, Any] = {
        "url": feed_server.url("/s"),
        "incremental": {"since": "id", "since_param": "since_id"},
    }
    first = await poll(resources, **raw)
    assert first.state is not None and first.state["since"] == 9  # a number, not "4"
    second = await poll(resources, first.state, **raw)
    assert [e.external_id for e in second.events] == ["10"]
    assert second.state is not None and second.state["since"] == 10
    # A poll that finds nothing keeps the since value it had.
    put_json(feed_server, "/s?since_id=10", [])
    third = await poll(resources, second.state, **raw)
    assert third.events == [] and third.state is not None and third.state["since"] == 10


async def test_overlap_takes_time_off_a_date(feed_server: FeedServer, resources: Resources) -> None:
    raw: dict[str, Any] = {
        "url": feed_server.url("/w"),
        "params": {"q": "updated>={since}"},
        "incremental": {"since": "updated", "overlap": "1h"},
    }
    state = {"since": "2026-11-01T10:00:00+02:00"}
    expected = "/w?q=" + quote("updated>=2026-11-01T07:00:00Z", safe="")
    put_json(feed_server, expected, [])
    result = await poll(resources, state, **raw)
    assert result.events == [] and paths(feed_server) == [expected]
    assert result.state is not None and result.state["since"] == state["since"]


async def test_a_response_cursor_is_kept_and_sent(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/sync", {"changes": [issue(1)], "token": "t1"})
    put_json(feed_server, "/sync?token=t1", {"changes": [issue(2)], "token": "t2"})
    raw: dict[str, Any] = {
        "url": feed_server.url("/sync"),
        "items": "changes",
        "incremental": {"cursor": "token", "cursor_param": "token"},
    }
    first = await poll(resources, **raw)
    assert first.state is not None and first.state["cursor"] == "t1"
    second = await poll(resources, first.state, **raw)
    assert [e.external_id for e in second.events] == ["2"]
    assert second.state is not None and second.state["cursor"] == "t2"


async def test_a_failing_later_page_keeps_the_earlier_ones_and_the_old_since(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/f?page=1", [issue(1), issue(2)])
    feed_server.put("/f?page=2", b"{ not json", content_type="application/json")
    feed_server.put("/g?page=1", json.dumps([issue(5)]), content_type="application/json")
    feed_server.put("/g?page=2", b"slow down", status=429, headers={"Retry-After": "120"})
    raw: dict[str, Any] = {
        "pagination": {"type": "page", "param": "page"},
        "incremental": {"since": "updated"},
    }
    state = {"since": "2026-10-01T00:00:00Z"}
    result = await poll(resources, state, url=feed_server.url("/f"), **raw)
    assert [e.external_id for e in result.events] == ["1", "2"]
    assert (
        result.warning and "page 2 failed" in result.warning and "not valid JSON" in result.warning
    )
    assert result.state is not None and result.state["since"] == state["since"]
    limited = await poll(resources, state, url=feed_server.url("/g"), **raw)
    assert len(limited.events) == 1 and limited.min_interval == 120


async def test_conditional_get_for_plain_sources_only(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/etag", [issue(1)], etag='"v1"')
    first = await poll(resources, url=feed_server.url("/etag"))
    assert first.state is not None and first.state["etag"] == '"v1"'
    second = await poll(resources, first.state, url=feed_server.url("/etag"))
    assert second.not_modified and second.events == []
    assert feed_server.requests[-1][1].get("If-None-Match") == '"v1"'
    incremental = {"since": "updated"}
    state = {**first.state, "since": "2026-11-01T00:00:00Z"}
    feed_server.put("/etag?u=2026-11-01T00%3A00%3A00Z", json.dumps([issue(1)]), etag='"v1"')
    third = await poll(
        resources, state, url=feed_server.url("/etag"), params={"u": "{since}"},
        incremental=incremental,
    )  # fmt: skip
    assert not third.not_modified and "If-None-Match" not in feed_server.requests[-1][1]


async def test_a_changed_mapping_rebaselines_once(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/r", [issue(1)])
    url = feed_server.url("/r")
    first = await poll(resources, url=url)
    assert not first.rebaseline
    same = await poll(resources, first.state, url=url)
    assert not same.rebaseline
    fields = {**FIELDS, "title": {"template": "#{id}: {title}"}}
    assert first.state is not None
    carried = JsonApiConnector.carry_state({**first.state, "etag": '"x"', "since": 5})
    assert carried == {"mapping": first.state["mapping"], "checked": first.state["mapping"]}
    changed = await poll(resources, carried, url=url, fields=fields)
    assert changed.rebaseline and changed.events[0].title == "#1: Issue 1"
    after = await poll(resources, changed.state, url=url, fields=fields)
    assert not after.rebaseline


# --- bad input --------------------------------------------------------------------


async def test_items_that_fail_are_a_warning_and_the_rest_are_kept(
    feed_server: FeedServer, resources: Resources
) -> None:
    bad_id = issue(2, id={"not": "an id"})
    bad_title = issue(3, title=None) | {"title": ["a", "list"]}
    put_json(feed_server, "/partial", [issue(1), bad_id, bad_title])
    result = await poll(resources, url=feed_server.url("/partial"))
    assert [e.external_id for e in result.events] == ["1", "3"]
    assert result.events[1].title == ""  # the bad field is dropped, the item kept
    warning = result.warning or ""
    assert warning.startswith("api: 1 of 3 items could not be mapped")
    assert "field 'id' (id)" in warning and "field 'title' (title)" in warning


async def test_items_none_of_which_map_fail_the_poll_naming_field_and_source(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/none", [issue(n, id=[n]) for n in range(3)])
    with pytest.raises(ParseError, match=r"^api: 3 of 3 items could not be mapped: field 'id'"):
        await poll(resources, url=feed_server.url("/none"))


async def test_expressions_that_match_nothing_are_named(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/doc", {"results": [issue(1), issue(2)]})
    url = feed_server.url("/doc")
    with pytest.raises(ParseError, match=r"^api: .*items: 'data' matched nothing in the response"):
        await poll(resources, url=url, items="data")
    with pytest.raises(
        ParseError, match=r"^api: fields.id \(uid\) matched nothing in any of the 2"
    ):
        await poll(resources, url=url, items="results", fields={**FIELDS, "id": "uid"})
    # Other fields that match nothing: a warning on the first poll under the mapping.
    fields = {**FIELDS, "summary": "description"}
    first = await poll(resources, url=url, items="results", fields=fields)
    assert len(first.events) == 2
    assert (
        first.warning == "api: fields.summary (description) matched nothing in any of the 2 items"
    )
    again = await poll(resources, first.state, url=url, items="results", fields=fields)
    assert again.warning is None
    # A first poll that reads no item checks nothing: the next one with items does.
    put_json(feed_server, "/quiet", {"results": []})
    empty = await poll(resources, url=feed_server.url("/quiet"), items="results", fields=fields)
    assert empty.warning is None and empty.state is not None
    put_json(feed_server, "/quiet", {"results": [issue(1)]})
    later = await poll(
        resources, empty.state, url=feed_server.url("/quiet"), items="results", fields=fields
    )
    assert "fields.summary (description) matched nothing" in (later.warning or "")


async def test_a_null_list_is_empty_and_a_later_page_without_items_ends_the_pages(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(feed_server, "/go", {"data": {"items": None, "total": 0}})
    empty = await poll(resources, url=feed_server.url("/go"), items="data.items")
    assert empty.events == [] and empty.warning is None
    put_json(feed_server, "/end", {"data": [issue(1)], "next": "/end?p=2"})
    put_json(feed_server, "/end?p=2", {"next": None})
    ended = await poll(
        resources, url=feed_server.url("/end"), items="data",
        pagination={"type": "next_url", "next": "next"},
    )  # fmt: skip
    assert len(ended.events) == 1 and ended.warning is None and feed_server.hits("/end?p=2") == 1
    put_json(feed_server, "/odd", {"data": 5})
    with pytest.raises(ParseError, match="items: 'data' selected a number"):
        await poll(resources, url=feed_server.url("/odd"), items="data")
    with pytest.raises(ParseError, match=r"items \(sort_by"):
        await poll(resources, url=feed_server.url("/odd"), items="sort_by(data, &id)")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{ not json", "application/json", "not valid JSON: Expecting property name"),
        (b"<html>Sign in</html>", "text/html; charset=utf-8", "JSON (Content-Type text/html)"),
        (b"", "application/json", "empty response, expected JSON"),
        (b"[" * 200_000, "application/json", "JSON nested too deeply"),
        (b"\xff\xfe\x00garbage", "application/json", "not valid JSON"),
        (b'"a string"', "application/json", "selected text, not a list of items"),
    ],
)  # fmt: skip
async def test_invalid_json_fails_the_poll_with_a_reason(
    feed_server: FeedServer, resources: Resources, body: bytes, content_type: str, message: str
) -> None:
    feed_server.put("/bad", body, content_type=content_type)
    with pytest.raises(ParseError) as caught:
        await poll(resources, url=feed_server.url("/bad"))
    assert str(caught.value).startswith("api: ") and message in str(caught.value)


async def test_big_pages_and_bodies_are_bounded(
    feed_server: FeedServer, resources: Resources
) -> None:
    put_json(
        feed_server, "/big?page=1", [issue(n) for n in range(50)],
    )  # fmt: skip
    result = await poll(
        resources, url=feed_server.url("/big"), max_items=10,
        pagination={"type": "page", "param": "page"},
    )  # fmt: skip
    assert len(result.events) == 10 and paths(feed_server) == ["/big?page=1"]
    feed_server.put("/huge", b"[" + b'{"id": 1},' * 20_000 + b"{}]")
    small = Resources()  # its own fetcher, with a smaller cap
    try:
        with pytest.raises(FetchError, match="larger than 100000 bytes"):
            await poll(
                small, url=feed_server.url("/huge"), http=HttpSettings(max_body_bytes=100_000)
            )
    finally:
        await small.aclose()


async def test_a_local_file_is_read_whole(tmp_path: Path, resources: Resources) -> None:
    dump = tmp_path / "export.json"
    web = "https://tracker.example/issues/2"
    dump.write_text(json.dumps({"rows": [issue(1), issue(2, link=web)]}))
    result = await poll(resources, url=str(dump), items="rows", local_dirs=(tmp_path,))
    assert [e.external_id for e in result.events] == ["1", "2"]
    assert result.events[1].url == web  # (a relative one becomes file:, which prepare drops)
    assert result.state is not None and "version" in result.state
    again = await poll(resources, result.state, url=str(dump), items="rows", local_dirs=(tmp_path,))
    assert again.not_modified


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pagination": {"type": "cursor", "param": "c"}}, "pagination: next: required for"),
        ({"pagination": {"type": "link", "total": "t"}}, "pagination: total: not used by 'link'"),
        ({"pagination": {"type": "next_url", "next": "a[["}}, "pagination: next: invalid JMESPath"),
        ({"pagination": {"type": "page", "param": "p", "size_param": "n"}}, "size: required"),
        ({"pagination": {"type": "link", "max_pages": 5000}}, "max_pages: Input should be less"),
        ({"body": {"a": 1}}, 'body: needs method = "POST"'),
        ({"params": {"q": "{since}"}}, "{since} is used but incremental.since is not set"),
        ({"incremental": {"cursor_param": "c"}}, "incremental: cursor_param: needs cursor"),
        ({"incremental": {"since": "u", "since_format": "Y"}}, "since_format: a strftime"),
        ({"method": "DELETE"}, "source.method: Input should be 'GET' or 'POST'"),
        ({"url": "data/x.json", "pagination": {"type": "link"}}, "a file: url takes no"),
    ],
)  # fmt: skip
def test_option_mistakes_are_config_errors_naming_the_key(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        options(**{"url": "https://api.example/x", **raw})
    assert message in str(caught.value)


def test_method_is_case_insensitive_and_placeholders_in_a_post_body_need_their_option() -> None:
    assert options(url="https://e.org/", method="post").method == "POST"
    with pytest.raises(ConfigError, match="cursor"):
        options(url="https://e.org/", method="POST", body={"after": "{cursor}"})


# --- whole polls: poller, store, events and state together -----------------------


def api_source(sid: str, url: str, extra: str = "") -> str:
    fields = "".join(f'{k} = "{v}"\n' for k, v in FIELDS.items())
    return (
        f'\n[[sources]]\nid = "{sid}"\nkind = "jsonapi"\nurl = "{url}"\ninterval = "1m"\n'
        f"{extra}\n[sources.fields]\n{fields}"
        '[sources.incremental]\nsince = "updated"\nsince_param = "updated_after"\n'
    )


async def poll_all(config_path: Path) -> tuple[Store, dict[str, Any]]:
    config = load_config(config_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)  # a real parser process pool: everything is pickled
    try:
        outcomes = await poller.poll_now()
    finally:
        await poller.aclose()
    return store, {o.source_id: o for o in outcomes}


async def test_edits_become_updates_and_since_commits_with_the_events(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    put_json(feed_server, "/events", [issue(1), issue(2), issue(3)])
    sources = api_source("tracked", feed_server.url("/events")) + api_source(
        "quiet", feed_server.url("/events"), "track_updates = false"
    )
    config = write_config(tmp_path, sources)
    store, outcomes = await poll_all(config)
    assert [len(outcomes[s].new_event_ids) for s in ("tracked", "quiet")] == [3, 3]
    since = issue(3)["updated"]
    assert (store.source_state("tracked")[0] or {})["since"] == since
    store.close()
    edited = issue(3, title="Issue 3, renamed")
    query = urlencode({"updated_after": since}, quote_via=quote)
    put_json(feed_server, f"/events?{query}", [edited, issue(4)])
    store, outcomes = await poll_all(config)
    assert all(o.error is None for o in outcomes.values())
    tracked = [store.get_event(i, viewer=None) for i in outcomes["tracked"].new_event_ids]
    assert [(e.verb, e.external_id, e.title) for e in tracked if e] == [
        ("Update", "3", "Issue 3, renamed"),
        ("Create", "4", "Issue 4"),
    ]
    quiet = [store.get_event(i, viewer=None) for i in outcomes["quiet"].new_event_ids]
    assert [e.external_id for e in quiet if e] == ["4"]
    assert (store.source_state("tracked")[0] or {})["since"] == issue(4)["updated"]
    store.close()


async def test_warnings_and_errors_reach_the_admins_and_the_good_items_the_store(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    put_json(feed_server, "/mixed", [issue(1), issue(2, id={"x": 1}), issue(3)])
    put_json(feed_server, "/broken", [issue(1, id=[1]), issue(2, id=[2])])
    feed_server.put("/garbage", b"<html>login</html>", content_type="text/html")
    sources = "".join(
        api_source(s, feed_server.url(f"/{s}")) for s in ("mixed", "broken", "garbage")
    )
    store, outcomes = await poll_all(write_config(tmp_path, sources))
    assert len(outcomes["mixed"].new_event_ids) == 2 and outcomes["mixed"].error is None
    assert "broken: 2 of 2 items could not be mapped: field 'id'" in (
        outcomes["broken"].error or ""
    )
    assert "garbage: " in (outcomes["garbage"].error or "")
    assert "not valid JSON (Content-Type text/html)" in (outcomes["garbage"].error or "")
    status = {s.id: s for s in store.source_statuses(viewer=None)}
    assert (status["mixed"].last_warning or "").startswith(
        "mixed: 1 of 3 items could not be mapped"
    )
    assert status["mixed"].event_count == 2
    assert status["broken"].consecutive_failures == 1 and status["broken"].event_count == 0
    assert store.source_state("broken")[0] is None  # nothing committed for a failed poll
    store.close()
