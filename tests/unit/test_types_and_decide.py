from dataclasses import replace
from datetime import UTC, datetime

import pytest

from aggregator.decide import (
    CARRIED_IDS,
    MAX_CONTENT,
    MAX_TITLE,
    MIN_KEPT,
    carried_identity,
    content_hash,
    decide,
    event_time,
    identity,
    identity_scheme,
    prepare,
    settle_identities,
)
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


# --- attachments --------------------------------------------------------------


def test_event_json_lists_attachments_and_empty_when_none() -> None:
    base = dict(
        id=1, source_id="s", kind="feed", external_id="x", content_hash="h", verb="Create",
        object_type="Article", title="T", summary="", content_html="", url=None, actor=Actor(),
        published=NOW, updated=None, tags=(), thread_id=None, audience=(), ingested_at=NOW,
    )  # fmt: skip
    assert Event(**base, extra={}).to_json()["attachments"] == []  # type: ignore[arg-type]
    mp3 = {"url": "https://e.org/a.mp3", "type": "audio/mpeg", "length": 5}
    data = Event(**base, extra={"attachments": [mp3]}).to_json()  # type: ignore[arg-type]
    assert data["attachments"] == [mp3]


def test_prepare_keeps_only_web_attachments_once_each() -> None:
    attachments = [
        {"url": "https://e.org/a.mp3", "type": "audio/mpeg", "length": 12},
        {"url": "https://e.org/a.mp3", "type": "audio/ogg", "length": 99},  # same URL: first wins
        {"url": "javascript:alert(1)", "type": "text/html"},
        {"url": "data:audio/mpeg;base64,AAAA"},
        {"url": "mailto:a@e.org"},  # fine as a link, not as a file
        {"url": "/relative.mp3"},  # nothing to resolve it against here
        {"url": "http:no-host"},
        {"url": " http://e.org/b.jpg ", "type": "  ", "length": True},
        {"url": "http://e.org/c.ogg", "type": 5, "length": -1},
        "not a dict",
    ]
    [p] = prepare([item(extra={"attachments": attachments, "other": 1})])
    assert p.data.extra == {
        "other": 1,
        "attachments": [
            {"url": "https://e.org/a.mp3", "type": "audio/mpeg", "length": 12},
            {"url": "http://e.org/b.jpg", "type": None, "length": None},
            {"url": "http://e.org/c.ogg", "type": None, "length": None},
        ],
    }


def test_attachments_are_capped_and_do_not_change_the_version() -> None:
    many = [{"url": f"https://e.org/{n}.jpg"} for n in range(50)]
    [a] = prepare([item(extra={"attachments": many})])
    assert len(a.data.extra["attachments"]) == 20
    # A podcast's enclosure URLs often carry per-fetch tracking parameters.
    [b] = prepare([item(extra={"attachments": [{"url": "https://e.org/x.mp3?t=2"}]})])
    assert a.content_hash == b.content_hash == prepare([item()])[0].content_hash


def test_content_base_resolves_relative_urls_and_is_not_stored() -> None:
    body = '<a href="b.html">b</a>'
    [linked] = prepare([item(url="https://e.org/posts/1", content_html=body)])
    assert 'href="https://e.org/posts/b.html"' in linked.data.content_html
    [based] = prepare(
        [item(url="https://e.org/posts/1", content_html=body,
              extra={"content_base": "https://cdn.e.org/blog/"})]
    )  # fmt: skip
    assert 'href="https://cdn.e.org/blog/b.html"' in based.data.content_html
    assert based.data.extra == {} and based.data.url == "https://e.org/posts/1"
    assert based.content_hash == linked.content_hash


# --- identity schemes ---------------------------------------------------------


def entry(guid: str | None, link: str | None, title: str = "T", **kw: object) -> EventData:
    return item(external_id=guid, url=link, title=title, **kw)


def ids_of(items: list[EventData]) -> list[str | None]:
    return [i.external_id for i in items]


def test_untitled_undated_items_stay_apart_by_content() -> None:
    a = identity(entry(None, None, "", content_html="<p>one</p>"))
    b = identity(entry(None, None, "", content_html="<p>two</p>"))
    assert a != b and a.startswith("hash:")
    # Title or date present: the content is not part of it, so an edit is an Update.
    c = identity(entry(None, None, "", published=NOW, content_html="<p>one</p>"))
    assert c == identity(entry(None, None, "", published=NOW, content_html="<p>edited</p>"))


def test_scheme_is_the_strongest_key_no_two_items_share() -> None:
    assert identity_scheme([entry("1", "https://e.org/1"), entry("2", None)]) == "guid"
    assert identity_scheme([entry("1", "https://e.org/1"), entry("1", "https://e.org/2")]) == "link"
    assert identity_scheme([entry(None, "https://e.org/"), entry(None, "https://e.org/")]) == "hash"
    assert identity_scheme([entry(None, None), entry(None, None)]) == "hash"


def test_guid_scheme_keeps_guids_and_falls_back_per_item() -> None:
    items = [
        entry("g1", "https://e.org/1"),
        entry(None, "https://e.org/2"),  # no guid: its link
        entry(None, "https://e.org/home", "A"),  # no guid, a shared link: the hash
        entry(None, "https://e.org/home", "B"),
    ]
    out, state = settle_identities(items, None)
    assert ids_of(out)[:2] == ["g1", "https://e.org/2"]
    assert ids_of(out)[2] != ids_of(out)[3] and str(ids_of(out)[2]).startswith("hash:")
    assert state["identity"] == "guid"


def test_duplicate_guids_move_the_source_to_links_for_good() -> None:
    first, state = settle_identities([entry("g1", "https://e.org/1")], None)
    assert ids_of(first) == ["g1"] and state["identity"] == "guid"
    dup = [entry("same", "https://e.org/1"), entry("same", "https://e.org/2")]
    second, state = settle_identities(dup, state)
    # The item stored as g1 keeps that identity: nothing is announced twice.
    assert ids_of(second) == ["g1", "https://e.org/2"] and state["identity"] == "link"
    # Unique guids again do not bring the guid scheme back.
    third, state = settle_identities(
        [entry("g1", "https://e.org/1"), entry("g3", "https://e.org/3")], state
    )
    assert ids_of(third) == ["g1", "https://e.org/3"] and state["identity"] == "link"
    # Links shared later: "hash" for new items; known links keep their identity.
    fourth, state = settle_identities(
        [entry(None, "https://e.org/1"), entry(None, "https://e.org/x", "A", published=NOW),
         entry(None, "https://e.org/x", "B", published=NOW)], state,
    )  # fmt: skip
    assert state["identity"] == "hash" and ids_of(fourth)[0] == "g1"
    assert all(str(i).startswith("hash:") for i in ids_of(fourth)[1:])
    again, _ = settle_identities([entry("g9", "https://e.org/9")], state)
    assert str(ids_of(again)[0]).startswith("hash:")


def test_guids_minted_afresh_on_every_fetch_are_detected() -> None:
    links = [f"https://e.org/{n}" for n in range(5)]
    first, state = settle_identities([entry(f"{link}#1", link) for link in links], None)
    assert state["identity"] == "guid"
    second, state = settle_identities([entry(f"{link}#2", link) for link in links], state)
    assert state["identity"] == "link"
    assert ids_of(second) == ids_of(first)  # what is stored stays the identity
    # A sixth item arrives: it is known by its link; the others keep theirs.
    third, state = settle_identities(
        [entry(f"{link}#3", link) for link in [*links, "https://e.org/5"]], state
    )
    assert ids_of(third) == [*ids_of(first), "https://e.org/5"]


def test_one_changed_guid_among_many_is_a_new_item_not_instability() -> None:
    links = [f"https://e.org/{n}" for n in range(4)]
    _, state = settle_identities([entry(f"g{n}", link) for n, link in enumerate(links)], None)
    out, state = settle_identities(
        [entry("fixed", links[0]), *(entry(f"g{n}", lk) for n, lk in enumerate(links) if n)], state
    )
    assert state["identity"] == "guid" and ids_of(out) == ["fixed", "g1", "g2", "g3"]


@pytest.mark.parametrize("window", range(1, MIN_KEPT))
def test_a_small_window_whose_guids_change_stays_on_guids(window: int) -> None:
    """A CI "last build" feed: one link, a guid per build. Taking that for
    minted guids would make every later build an Update of the first."""
    links = [f"https://ci.e.org/job/{n}/lastBuild" for n in range(window)]
    _, state = settle_identities([entry(f"build-1-{n}", lk) for n, lk in enumerate(links)], None)
    for build in (2, 3):
        out, state = settle_identities(
            [entry(f"build-{build}-{n}", lk) for n, lk in enumerate(links)], state
        )
        assert state["identity"] == "guid"
        assert ids_of(out) == [f"build-{build}-{n}" for n in range(window)]


def test_guids_that_move_to_other_links_are_not_unstable() -> None:
    """Links by position ("the top story"): each guid moves down a link as a
    new item arrives. The old guids are still there, so none was minted."""
    links = [f"https://e.org/top/{n}" for n in range(4)]
    _, state = settle_identities([entry(f"g{n}", lk) for n, lk in enumerate(links)], None)
    shifted = [entry(f"g{n - 1}", lk) for n, lk in enumerate(links)]  # g-1 is new
    out, state = settle_identities(shifted, state)
    assert state["identity"] == "guid" and ids_of(out) == ["g-1", "g0", "g1", "g2"]


def test_an_entry_listed_twice_costs_no_scheme() -> None:
    twice = entry("g1", "https://e.org/1", published=NOW)
    out, state = settle_identities([twice, entry("g2", "https://e.org/2"), twice], None)
    assert state["identity"] == "guid" and ids_of(out) == ["g1", "g2"]
    assert len(state["ids"]) == 2  # the repeated link is unique again, so carried


def test_distinct_entries_sharing_guid_and_link_stay_apart() -> None:
    """A proxy giving every entry one guid and one link: only the title and
    date tell the entries apart, so they are not repeats of one listing."""
    proxy = "https://feedproxy.e.org/~r/x"
    out, state = settle_identities(
        [entry("https://e.org/", proxy, "A"), entry("https://e.org/", proxy, "B")], None
    )
    assert state["identity"] == "hash" and len(set(ids_of(out))) == 2


def test_the_identity_part_of_a_state_is_what_carries() -> None:
    state = {"etag": "e", "version": "v", "identity": "link", "ids": {"k": "g", "bad": 1}}
    assert carried_identity(state) == {"identity": "link", "ids": {"k": "g"}}
    assert carried_identity({"identity": "bogus"}) == {} == carried_identity(None)


def test_identity_state_survives_empty_polls_and_junk() -> None:
    _, state = settle_identities([entry(None, "https://e.org/1")], None)
    assert state == {"identity": "link"}
    assert settle_identities([], state) == ([], state)
    assert settle_identities([], None) == ([], {})
    out, fresh = settle_identities([entry("g", None)], {"identity": "bogus", "ids": [1, 2]})
    assert ids_of(out) == ["g"] and fresh == {"identity": "guid"}


def test_carried_ids_are_bounded() -> None:
    items = [entry(f"g{n}", f"https://e.org/{n}") for n in range(CARRIED_IDS + 50)]
    _, state = settle_identities(items, None)
    assert len(state["ids"]) == CARRIED_IDS


def test_an_item_is_bounded_in_size() -> None:
    huge = EventData(
        external_id="x", title="t" * 5_000, content_html="<p>" + "<b>x</b>" * 300_000 + "</p>"
    )
    [item] = prepare([huge])
    assert len(item.data.title) == MAX_TITLE and item.data.title.endswith("…")
    assert len(item.data.content_html) <= MAX_CONTENT + 100  # nh3 may close what the cut opened
    assert item.data.content_html.endswith("</b>") or item.data.content_html.endswith("</p>")
    small = EventData(external_id="y", title="fine", content_html="<p>fine</p>")
    assert prepare([small])[0].data.title == "fine"
