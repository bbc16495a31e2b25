from dataclasses import replace
from datetime import UTC, datetime

from aggregator.decide import content_hash, decide, event_time, identity, prepare
from aggregator.types import Actor, Event, EventData

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def item(**kw: object) -> EventData:
    base: dict[str, object] = {"external_id": "a", "title": "Hello", "content_html": "<p>Hi</p>"}
    base.update(kw)
    return EventData(**base)  # type: ignore[arg-type]


def test_event_json_has_the_contract_fields() -> None:
    event = Event(
        id=7, source_id="s", kind="feed", external_id="x", content_hash="h", verb="Create",
        object_type="Article", title="T", summary="S", content_html="<p>S</p>",
        url="https://e.org/x", actor=Actor("Jane Doe", "jane@e.org", None), published=NOW,
        updated=None, tags=("a",), thread_id=None, extra={}, audience=("everyone",),
        ingested_at=NOW,
    )  # fmt: skip
    data = event.to_json()
    for key in ("id", "source_id", "kind", "verb", "object_type", "external_id", "title",
                "summary", "content_html", "url", "actor", "published", "tags"):  # fmt: skip
        assert key in data
    assert data["actor"] == {"name": "Jane Doe", "email": "jane@e.org", "url": None}
    assert data["published"] == "2026-11-27T12:00:00+00:00"


def test_identity_falls_back_from_id_to_link_to_hash() -> None:
    assert identity(item(external_id="guid-1", url="https://e.org/1")) == "guid-1"
    assert identity(item(external_id=None, url="https://e.org/1")) == "https://e.org/1"
    a = identity(item(external_id=None, url=None, title="x", published=NOW))
    b = identity(item(external_id=None, url=None, title="y", published=NOW))
    assert a.startswith("hash:") and a != b
    assert a == identity(item(external_id=None, url=None, title="x", published=NOW))


def test_hash_ignores_timestamps_but_not_content() -> None:
    one = item(published=NOW)
    assert content_hash(one) == content_hash(replace(one, updated=NOW))
    assert content_hash(one) != content_hash(replace(one, title="Hello!"))
    assert content_hash(one) != content_hash(replace(one, content_html="<p>Ho</p>"))


def test_prepare_sanitises_summarises_and_drops_duplicate_ids() -> None:
    items = [
        item(content_html='<p onclick="x()">Hi <script>alert(1)</script><b>there</b></p>'),
        item(title="second copy of a"),
        item(external_id="b", tags=("t1",)),
    ]
    out = prepare(items, source_tags=("src",))
    assert [p.external_id for p in out] == ["a", "b"]
    assert out[0].data.content_html == "<p>Hi <b>there</b></p>"
    assert out[0].data.summary == "Hi there"
    assert out[1].data.tags == ("t1", "src")


def test_decide_new_same_and_changed() -> None:
    a, b = prepare([item(), item(external_id="b")])
    assert decide([a, b], {}) == [a, b]
    assert decide([a, b], {"a": a.content_hash, "b": b.content_hash}) == []
    changed = decide([a], {"a": "old"})
    assert len(changed) == 1 and changed[0].data.verb == "Update"
    assert decide([a], {"a": "old"}, track_updates=False) == []


def test_event_time_never_in_the_future() -> None:
    future = datetime(2030, 1, 1, tzinfo=UTC)
    assert event_time(item(published=future), NOW) == NOW
    assert event_time(item(), NOW) == NOW
    assert event_time(item(updated=datetime(2026, 1, 1, tzinfo=UTC)), NOW).year == 2026


def test_only_web_links_survive() -> None:
    [p] = prepare(
        [
            item(
                url="javascript:alert(1)",
                actor=Actor("A", None, "data:text/html,x"),
                content_html='<a href="/rel">r</a>',
            )
        ]
    )
    assert p.data.url is None and p.data.actor.url is None
    assert "href" not in p.data.content_html  # no base to resolve against
    [q] = prepare([item(url=" https://e.org/post ", actor=Actor("A", None, "mailto:a@e.org"))])
    assert q.data.url == "https://e.org/post" and q.data.actor.url == "mailto:a@e.org"


def test_source_tags_do_not_change_the_version() -> None:
    [a] = prepare([item()], source_tags=("old",))
    [b] = prepare([item()], source_tags=("new", "tags"))
    assert a.content_hash == b.content_hash and b.data.tags == ("new", "tags")


def test_malformed_urls_are_dropped_not_fatal() -> None:
    [p] = prepare([item(url="http://[::1", content_html='<a href="http://[x">x</a>')])
    assert p.data.url is None
