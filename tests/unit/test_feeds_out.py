"""Personal feeds out: Atom 1.0, RSS 2.0 and JSON Feed 1.1 at token URLs,
parsed back with feedparser; Atom checked against the RFC 4287 rules that can
be checked offline; conditional GET; token rotation; visibility; OPML."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
import listparser
import pytest
from sqlalchemy import update

from aggregator.store.schema import streams
from aggregator.types import Actor, EventData
from tests.unit.test_streams import BASE, NOW, World, make_world, world

__all__ = ["make_world", "world"]  # fixtures, used by name

A = "{http://www.w3.org/2005/Atom}"
FORMATS = ("atom", "rss", "json")
# RFC 3339 date-time, as RFC 4287 3.3 requires (an uppercase T and Z).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SCRIPTED = EventData(
    external_id="x-1",
    title="Quarterly <script>alert('t')</script> figures",
    content_html='<p onclick="alert(1)">Numbers <b>up</b></p><script>alert(2)</script>'
    '<a href="javascript:alert(3)">x</a><img src="https://e.org/i.png" onerror="alert(4)">',
    url="https://e.org/figures",
    actor=Actor(name="Jane Doe", email="jane@e.org", url="https://e.org/~jane"),
    tags=("finance", "q3"),
)


def feed(world: World, user: str, stream: int | str, fmt: str, **kw: Any) -> Any:
    token = world.store.streams.feed_token(world.uid(user))
    return world.client.get(f"/feeds/{token}/{stream}.{fmt}", **kw)


def atom_problems(body: bytes) -> list[str]:
    """What an Atom document breaks of RFC 4287's offline-checkable rules."""
    problems: list[str] = []
    root = ET.fromstring(body)
    if root.tag != f"{A}feed":
        return [f"root is {root.tag}"]

    def iri(value: str | None, where: str) -> None:
        # 4.2.6: an IRI, and absolute (a scheme, no spaces).
        if not value or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", value):
            problems.append(f"{where}: atom:id {value!r} is not an absolute IRI")

    def date(value: str | None, where: str) -> None:
        if not value or not RFC3339.match(value):
            problems.append(f"{where}: {value!r} is not an RFC 3339 date-time")

    def once(parent: ET.Element, name: str, where: str) -> ET.Element | None:
        found = parent.findall(f"{A}{name}")
        if len(found) != 1:
            problems.append(f"{where}: {len(found)} atom:{name}, must be exactly one")
        return found[0] if found else None

    def text_construct(el: ET.Element | None, where: str) -> None:
        if el is not None and el.get("type", "text") not in ("text", "html", "xhtml"):
            problems.append(f"{where}: text type {el.get('type')!r}")

    def authors_ok(el: ET.Element) -> bool:
        return all(
            (a.findtext(f"{A}name") or "").strip() for a in el.findall(f"{A}author")
        ) and bool(el.findall(f"{A}author"))

    def links(el: ET.Element, where: str) -> list[ET.Element]:
        found = el.findall(f"{A}link")
        for link in found:
            if not link.get("href"):
                problems.append(f"{where}: a link without href")
        # 4.1.1 / 4.1.2: at most one alternate link per type and hreflang.
        alternates = [
            (x.get("type"), x.get("hreflang"))
            for x in found
            if x.get("rel", "alternate") == "alternate"
        ]
        if len(alternates) != len(set(alternates)):
            problems.append(f"{where}: two alternate links with the same type and hreflang")
        return found

    feed_id = once(root, "id", "feed")
    iri(feed_id.text if feed_id is not None else None, "feed")
    text_construct(once(root, "title", "feed"), "feed title")
    updated = once(root, "updated", "feed")
    date(updated.text if updated is not None else None, "feed updated")
    feed_links = links(root, "feed")
    if not any(x.get("rel") == "self" for x in feed_links):
        problems.append("feed: no rel=self link (SHOULD)")
    feed_has_author = authors_ok(root)
    seen: set[str] = set()
    for n, entry in enumerate(root.findall(f"{A}entry")):
        where = f"entry {n}"
        entry_id = once(entry, "id", where)
        value = entry_id.text if entry_id is not None else None
        iri(value, where)
        if value in seen:
            problems.append(f"{where}: duplicate id {value}")
        seen.add(value or "")
        text_construct(once(entry, "title", where), f"{where} title")
        entry_updated = once(entry, "updated", where)
        date(entry_updated.text if entry_updated is not None else None, f"{where} updated")
        for name in ("published",):
            for el in entry.findall(f"{A}{name}"):
                date(el.text, f"{where} {name}")
        entry_links = links(entry, where)
        contents = entry.findall(f"{A}content")
        if len(contents) > 1:
            problems.append(f"{where}: more than one content")
        alternate = [x for x in entry_links if x.get("rel", "alternate") == "alternate"]
        if not contents and not alternate:
            problems.append(f"{where}: neither content nor a rel=alternate link")
        for content in contents:
            text_construct(content, f"{where} content")
        if len(entry.findall(f"{A}summary")) > 1:
            problems.append(f"{where}: more than one summary")
        if not feed_has_author and not authors_ok(entry):
            problems.append(f"{where}: no author, and the feed has none either")
        for category in entry.findall(f"{A}category"):
            if not category.get("term"):
                problems.append(f"{where}: a category without term")
    return problems


def test_atom_checker_catches_what_it_claims() -> None:
    """The checker itself: a broken document shows each kind of problem."""
    broken = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><title>u</title>'
        b"<updated>2026-11-27 12:00</updated>"
        b"<entry><id>not an iri</id><title>a</title><updated>2026-11-27T12:00:00Z</updated>"
        b"</entry><entry><id>urn:x:1</id><id>urn:x:1</id></entry></feed>"
    )
    found = "\n".join(atom_problems(broken))
    for expected in (
        "feed: 0 atom:id",
        "2 atom:title",
        "not an RFC 3339",
        "not an absolute IRI",
        "neither content nor",
        "no author",
        "entry 1: 2 atom:id",
        "entry 1: 0 atom:updated",
        "no rel=self",
    ):
        assert expected in found, expected


def scripted_world(world: World) -> dict[str, Any]:
    stream = world.new_stream("max", "Figures", "source:pub")
    world.add("pub", SCRIPTED, "plain one", "plain two")
    world.add("sec", "secret memo")
    return stream


# --- each format, parsed back ---------------------------------------------------------


def test_atom_parses_back_with_every_required_element(world: World) -> None:
    stream = scripted_world(world)
    res = feed(world, "max", stream["id"], "atom")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/atom+xml"
    parsed = feedparser.parse(res.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    f = parsed.feed
    assert f.title == "Figures" and f.id == f"{BASE}/api/streams/{stream['id']}"
    assert f.updated_parsed is not None and f.author
    assert len(parsed.entries) == 3
    newest, *_ = parsed.entries
    assert newest.title == "plain two"  # newest first
    entry = next(e for e in parsed.entries if e.title.startswith("Quarterly"))
    assert entry.id.startswith(f"{BASE}/api/events/")
    assert entry.link == "https://e.org/figures"
    assert entry.updated_parsed and entry.published_parsed
    assert entry.author == "Jane Doe"
    assert [t.term for t in entry.tags] == ["finance", "q3"]
    assert "<b>up</b>" in entry.content[0].value
    assert entry.title == "Quarterly <script>alert('t')</script> figures"  # text, kept as text
    assert atom_problems(res.content) == []


def test_rss_parses_back_with_every_required_element(world: World) -> None:
    stream = scripted_world(world)
    res = feed(world, "max", stream["id"], "rss")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/rss+xml"
    parsed = feedparser.parse(res.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    channel = parsed.feed
    assert channel.title == "Figures" and channel.link == f"{BASE}/" and channel.description
    assert len(parsed.entries) == 3
    for item in parsed.entries:
        assert item.id.startswith(f"{BASE}/api/events/") and item.guidislink is False
        assert item.title and item.link and item.published_parsed
    entry = next(e for e in parsed.entries if e.title.startswith("Quarterly"))
    assert entry.link == "https://e.org/figures" and entry.author == "Jane Doe"
    assert "<b>up</b>" in entry.content[0].value
    root = ET.fromstring(res.content)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel_el = root.find("channel")
    assert channel_el is not None
    for name in ("title", "link", "description"):
        assert (channel_el.findtext(name) or "").strip(), name
    for item_el in channel_el.findall("item"):
        assert item_el.findtext("guid") and item_el.findtext("title") and item_el.findtext("link")
        # RSS <author> must be an e-mail address: names go in dc:creator.
        assert item_el.find("author") is None


def test_json_feed_parses_back_with_every_required_element(world: World) -> None:
    stream = scripted_world(world)
    res = feed(world, "max", stream["id"], "json")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/feed+json"
    body = json.loads(res.content)
    assert body["version"] == "https://jsonfeed.org/version/1.1"
    assert body["title"] == "Figures" and body["feed_url"] == str(res.url)
    assert body["home_page_url"] == f"{BASE}/"
    assert len(body["items"]) == 3
    for item in body["items"]:
        assert isinstance(item["id"], str) and item["url"]
        assert "content_html" in item or "content_text" in item
        assert datetime.fromisoformat(item["date_published"]).tzinfo is not None
    entry = next(i for i in body["items"] if i["title"].startswith("Quarterly"))
    assert entry["url"] == "https://e.org/figures"
    assert entry["authors"] == [{"name": "Jane Doe", "url": "https://e.org/~jane"}]
    assert entry["tags"] == ["finance", "q3"] and "<b>up</b>" in entry["content_html"]
    assert entry["_tidings"]["source_id"] == "pub"
    # feedparser does not read JSON Feed; the ids must still agree with Atom's.
    atom = feedparser.parse(feed(world, "max", stream["id"], "atom").content)
    assert [e.id for e in atom.entries] == [i["id"] for i in body["items"]]


def test_content_is_the_sanitised_html_only(world: World) -> None:
    stream = scripted_world(world)
    for fmt in FORMATS:
        body = feed(world, "max", stream["id"], fmt).content
        for dangerous in (b"alert(1)", b"alert(2)", b"alert(3)", b"alert(4)", b"onerror"):
            assert dangerous not in body, (fmt, dangerous)
        # The title is text: escaped in XML, and no raw "<script" even in JSON.
        assert b"<script" not in body.lower(), fmt
    item = next(
        i
        for i in feed(world, "max", stream["id"], "json").json()["items"]
        if i["title"].startswith("Quarterly")
    )
    assert "script" not in item["content_html"] and "onclick" not in item["content_html"]


def test_an_empty_feed_is_still_valid(world: World) -> None:
    stream = world.new_stream("zoe", "Legal", "source:sec")  # zoe may not see sec
    world.add("sec", "memo")
    res = feed(world, "zoe", stream["id"], "atom")
    assert res.status_code == 200 and atom_problems(res.content) == []
    assert feedparser.parse(res.content).entries == []
    assert feed(world, "zoe", stream["id"], "json").json()["items"] == []
    assert not feedparser.parse(feed(world, "zoe", stream["id"], "rss").content).bozo


def test_characters_xml_cannot_carry_are_dropped(world: World) -> None:
    world.add("pub", EventData(external_id="c", title="bell\x07 and \x0bvtab", summary="nul\x00"))
    for fmt in ("atom", "rss"):
        res = feed(world, "max", "all", fmt)
        assert res.status_code == 200, fmt
        parsed = feedparser.parse(res.content)
        assert not parsed.bozo and parsed.entries[0].title == "bell and vtab"
    assert atom_problems(feed(world, "max", "all", "atom").content) == []


def test_the_feed_holds_the_newest_fifty(world: World) -> None:
    ids = world.add("pub", *[f"item {i}" for i in range(60)])
    items = feed(world, "max", "all", "json").json()["items"]
    assert [i["_tidings"]["event_id"] for i in items] == ids[::-1][:50]


def test_output_is_the_same_bytes_until_something_changes(world: World) -> None:
    world.add("pub", "a", "b")
    for fmt in FORMATS:
        first, second = feed(world, "max", "all", fmt), feed(world, "max", "all", fmt)
        assert first.content == second.content, fmt
        assert first.headers["etag"] == second.headers["etag"], fmt


# --- conditional GET -------------------------------------------------------------------


def test_etag_last_modified_and_304(world: World) -> None:
    world.add("pub", "a")
    first = feed(world, "max", "all", "atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong
    assert "private" in first.headers["cache-control"]
    assert parsedate_to_datetime(modified) == NOW + timedelta(minutes=1)
    again = feed(world, "max", "all", "atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    listed = feed(world, "max", "all", "atom", headers={"If-None-Match": f'"zzz", W/{etag}'})
    assert listed.status_code == 304
    assert feed(world, "max", "all", "atom", headers={"If-None-Match": "*"}).status_code == 304
    since = feed(world, "max", "all", "atom", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    earlier = format_datetime(NOW, usegmt=True)
    assert (
        feed(world, "max", "all", "atom", headers={"If-Modified-Since": earlier}).status_code == 200
    )
    junk = feed(world, "max", "all", "atom", headers={"If-Modified-Since": "yesterday"})
    assert junk.status_code == 200
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert feed(world, "max", "all", "atom", headers=both).status_code == 200
    # Each format is its own representation.
    assert len({feed(world, "max", "all", f).headers["etag"] for f in FORMATS}) == 3

    world.add("pub", "b")
    changed = feed(world, "max", "all", "atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert parsedate_to_datetime(changed.headers["last-modified"]) > parsedate_to_datetime(modified)


def test_renaming_or_requerying_a_stream_changes_its_etag(world: World) -> None:
    stream = world.new_stream("max", "S", "source:pub")
    world.add("pub", "a")
    etag = feed(world, "max", stream["id"], "rss").headers["etag"]
    world.client.patch(
        f"/api/streams/{stream['id']}", headers=world.auth("max"), json={"name": "T"}
    )
    renamed = feed(world, "max", stream["id"], "rss", headers={"If-None-Match": etag})
    assert renamed.status_code == 200 and "<title>T</title>" in renamed.text


def test_a_new_name_or_query_moves_last_modified(world: World) -> None:
    """A reader that sends only If-Modified-Since must see an edit too."""
    stream = world.new_stream("max", "S", "source:pub")
    with world.store._write.begin() as conn:  # made long ago (HTTP dates are in seconds)
        conn.execute(update(streams).values(created_at=NOW, changed_at=NOW))
    world.add("pub", "a")
    before = feed(world, "max", stream["id"], "atom").headers["last-modified"]
    ask = {"If-Modified-Since": before}
    assert feed(world, "max", stream["id"], "atom", headers=ask).status_code == 304
    res = world.client.patch(
        f"/api/streams/{stream['id']}", headers=world.auth("max"), json={"query": "a"}
    )
    assert res.status_code == 200
    after = feed(world, "max", stream["id"], "atom", headers=ask)
    assert after.status_code == 200
    assert parsedate_to_datetime(after.headers["last-modified"]) > parsedate_to_datetime(before)
    updated = ET.fromstring(after.content).findtext(f"{A}updated") or ""
    moved = datetime.fromisoformat(updated).replace(microsecond=0)
    assert moved == parsedate_to_datetime(after.headers["last-modified"])


def test_rss_descriptions_are_escaped_text(world: World) -> None:
    """RSS's <description> is HTML; the summary is plain text that may read
    like markup (here an entity-escaped tag in the source)."""
    hostile = "&lt;img src=x onerror=alert(1)&gt; and <b>bold</b>"
    world.add("pub", EventData(external_id="h", title="h", summary=hostile))
    [item] = ET.fromstring(feed(world, "max", "all", "rss").content).iter("item")
    description = item.findtext("description") or ""
    assert "<img" not in description and "<b>" not in description
    assert description == "&lt;img src=x onerror=alert(1)&gt; and bold"
    [entry] = feedparser.parse(feed(world, "max", "all", "rss").content).entries
    assert "<img" not in entry.summary


def test_links_with_control_characters_still_make_valid_feeds(world: World) -> None:
    world.add("pub", EventData(external_id="u", title="u", url="https://e.org/a\x01b\tc"))
    for fmt in FORMATS:
        assert feed(world, "max", "all", fmt).status_code == 200, fmt
    [entry] = feedparser.parse(feed(world, "max", "all", "atom").content).entries
    assert entry.link == "https://e.org/a%01bc"
    assert atom_problems(feed(world, "max", "all", "atom").content) == []


# --- who may read what -----------------------------------------------------------------


def test_feeds_need_no_session_and_take_no_other_credential(world: World) -> None:
    world.add("pub", "a")
    token = world.store.streams.feed_token(world.uid("max"))
    assert world.client.get(f"/feeds/{token}/all.atom").status_code == 200
    # An API token is not a feed token.
    api_token = world.tokens["max"]
    assert world.client.get(f"/feeds/{api_token}/all.atom").status_code == 404
    assert world.client.post(f"/feeds/{token}/all.atom").status_code == 405


def test_unknown_tokens_streams_and_formats_are_404(world: World) -> None:
    mine = world.new_stream("max", "Mine")
    theirs = world.new_stream("eve", "Theirs")
    token = world.store.streams.feed_token(world.uid("max"))
    for path in (
        f"/feeds/{token}/{theirs['id']}.atom",  # eve's stream with max's token
        f"/feeds/{token}/999.atom",
        f"/feeds/{token}/{mine['id']}.xml",
        f"/feeds/{token}/everything.atom",
        f"/feeds/{token}/{'9' * 50}.json",
        f"/feeds/{token[:-1]}x/all.atom",
        f"/feeds/{token.split('.')[1]}/all.atom",
        "/feeds/nobody/all.atom",
    ):
        assert world.client.get(path).status_code == 404, path
    assert world.client.get(mine["feeds"]["atom"]).status_code == 200


def test_rotating_the_token_ends_every_old_url(world: World) -> None:
    stream = world.new_stream("max", "S")
    old = [*stream["feeds"].values(), world.get("/api/streams", "max").json()["feeds"]["rss"]]
    assert all(world.client.get(url).status_code == 200 for url in old)
    new = world.post("/api/feed-token/rotate", "max").json()["feeds"]
    for url in old:
        assert world.client.get(url).status_code == 404, url
    assert world.client.get(new["atom"]).status_code == 200
    [listed] = world.get("/api/streams", "max").json()["streams"]
    assert world.client.get(listed["feeds"]["json"]).status_code == 200


def test_a_disabled_or_deleted_user_has_no_feeds(world: World) -> None:
    stream = world.new_stream("zoe", "S")
    url = stream["feeds"]["atom"]
    assert world.client.get(url).status_code == 200
    world.store.people.update_user("zoe", disabled=True, actor="t", now=NOW)
    assert world.client.get(url).status_code == 404
    world.store.people.update_user("zoe", disabled=False, actor="t", now=NOW)
    assert world.client.get(url).status_code == 200
    world.store.people.delete_user("zoe", actor="t", now=NOW)
    assert world.client.get(url).status_code == 404
    all_url = url.rsplit("/", 1)[0] + "/all.atom"
    assert world.client.get(all_url).status_code == 404


def test_a_members_feed_shows_only_what_they_may_see(world: World) -> None:
    world.add("pub", "public note")
    world.add("sec", "legal memo")
    world.add("ops", "ops alert")

    def titles(user: str, fmt: str = "json") -> set[str]:
        body = feed(world, user, "all", fmt)
        if fmt == "json":
            return {i["title"] for i in body.json()["items"]}
        return {e.title for e in feedparser.parse(body.content).entries}

    for fmt in FORMATS:
        assert titles("max", fmt) == {"public note", "legal memo"}, fmt
        assert titles("eve", fmt) == {"public note", "ops alert"}, fmt
        assert titles("zoe", fmt) == {"public note"}, fmt
        assert titles("ada", fmt) == {"public note", "legal memo", "ops alert"}, fmt
    # A stream naming a source the member may not see shows nothing of it.
    legal = world.new_stream("eve", "Legal", "source:sec")
    assert feed(world, "eve", legal["id"], "json").json()["items"] == []

    etag = feed(world, "max", "all", "atom").headers["etag"]
    world.store.people.remove_member("legal", "max", actor="t", now=NOW)
    assert titles("max") == {"public note"}
    after = feed(world, "max", "all", "atom", headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["etag"] != etag
    world.store.people.add_member("legal", "max", actor="t", now=NOW)
    assert titles("max") == {"public note", "legal memo"}


def test_a_stream_feed_applies_the_stream_query(world: World) -> None:
    stream = world.new_stream("ada", "Ops only", "source:ops")
    world.add("pub", "p")
    world.add("ops", "o1", "o2")
    items = feed(world, "ada", stream["id"], "json").json()["items"]
    assert [i["title"] for i in items] == ["o2", "o1"]


# --- OPML ---------------------------------------------------------------------------------


def test_opml_export_lists_each_streams_atom_feed(world: World) -> None:
    made = [
        world.new_stream("max", name, q) for name, q in (("Legal", "source:sec"), ("A & B", ""))
    ]
    world.new_stream("eve", "Not max's")
    res = world.get("/api/streams.opml", "max")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/x-opml")
    assert "attachment" in res.headers["content-disposition"]
    parsed = listparser.parse(res.content)
    assert not parsed.bozo and parsed.version == "opml2"
    assert [(f["title"], f["url"]) for f in parsed.feeds] == [
        (s["name"], s["feeds"]["atom"]) for s in made
    ]
    for f in parsed.feeds:
        assert urlsplit(f["url"]).netloc == "testserver"
        assert world.client.get(f["url"]).status_code == 200
    empty = listparser.parse(world.get("/api/streams.opml", "zoe").content)
    assert not empty.bozo and empty.feeds == []


def test_feed_times_are_the_events_times(world: World) -> None:
    when = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    world.add("pub", EventData(external_id="t", title="timed", published=when))
    entry = feedparser.parse(feed(world, "max", "all", "atom").content).entries[0]
    assert datetime(*entry.published_parsed[:6], tzinfo=UTC) == when


@pytest.mark.parametrize("fmt", FORMATS)
def test_head_answers_like_get(world: World, fmt: str) -> None:
    token = world.store.streams.feed_token(world.uid("max"))
    res = world.client.head(f"/feeds/{token}/all.{fmt}")
    assert res.status_code == 200 and res.headers["etag"]
