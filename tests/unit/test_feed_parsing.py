"""The feed connector's parser on real-world feeds from the shared corpus
(tests/corpus.py says where it is), and on feeds made from them in memory."""

import ast
import contextlib
import html
import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import parse_config
from aggregator.connector import PollContext, Resources
from aggregator.decide import decide, event_time, prepare, settle_identities
from aggregator.exceptions import ParseError
from aggregator.store import PollRecord, Store
from aggregator.types import Actor, EventData, PollResult
from connectors.feed import RULES, FeedConnector, FeedOptions, defuse_prolog, parse_feed
from tests.corpus import corpus, files
from tests.stores import store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def expectation(path: Path) -> str:
    """The `Expect:` line of one of feedparser's test files ("" in the UTF-16
    and UTF-32 ones: they are about the encoding's name, which is not ours)."""
    found = re.search(r"Expect:\s*(.*)", path.read_bytes()[:3000].decode("latin-1"))
    return found.group(1).strip() if found else ""


# What feedparser's own tests expect of the first entry, for the fields Tidings keeps.
_DESCRIPTION = r"entries\[0\]\['description'\]"
ENTRY_TEXT = re.compile(
    rf"not bozo and (?:{_DESCRIPTION} == ('.*')|ord\({_DESCRIPTION}\) == (\d+))"
)
ENTRY_URL = re.compile(
    r"not bozo and entries\[0\]\['(link|links|author_detail|content|summary|description)'\]"
    r"(?:\[0\])?(?:\['\w+'\])? == '(.*)'"
)

REAL_WORLD = files("feeds", "rowanmanning-sample-feeds/real-world/*/feed.xml")
# Relative to the document: feedparser's test server, whose root they name.
DOCURI_TESTS = [
    p
    for p in files("feeds", "feedparser/wellformed/base/http_*_docuri.xml")
    if ENTRY_URL.fullmatch(expectation(p))
]
XML_BASE_CONTENT = files("feeds", "feedparser/wellformed/base/entry_content_xml_base*.xml")
ENCODING_TESTS = [
    p for p in files("feeds", "feedparser/encoding/*.xml") if ENTRY_TEXT.fullmatch(expectation(p))
]
PODCASTS = [p for p in files("feeds", "podcastparser/*.rss") if p.with_suffix(".json").exists()]

MACRUMORS = "244ffb56aadf3e0c66356f6177bd675b"  # RSS 2.0: guid, pubDate, dc:creator
GUARDIAN = "2d055498ae801efb0bf0b6124009cac2"  # UTF-8, curly quotes in 66 titles
THE_VERGE = "90c654888cac5a6037d18431d480abbf"  # Atom 1.0: id, published, updated
NEXT_WEB = "182cf60c6e9d1f6f7d1f557176ca5a84"  # sy:updatePeriod hourly
OFF_MENU = "dedf3f57aadefbdc6b8ad6e17efca957"  # a podcast: <ttl>60</ttl>, enclosures
NASA = "0390cb7970a0c01c35d7bfb28aa300d3"  # managingEditor only, no item authors
BUZZFEED = "6d80261f6c746f21214c3ea9d006ec07"  # managingEditor "addr (https://...)"
CRITICAL_ROLE = "fa88e615794de0164b706a5c21619e61"  # YouTube: media:group


def reader_file(name: str) -> Path:
    return corpus("feeds", "lemon24-reader", name)


def real_world(name: str) -> bytes:
    return corpus("feeds", "rowanmanning-sample-feeds", "real-world", name, "feed.xml").read_bytes()


@pytest.mark.corpus
def test_corpus_is_present_and_mostly_parses() -> None:
    corpus("feeds")
    assert len(REAL_WORLD) >= 20, "expected the rowanmanning real-world feeds in the corpus"
    parsed = 0
    for path in REAL_WORLD:
        with contextlib.suppress(ParseError):
            parsed += bool(parse_feed(path.read_bytes(), "https://example.org/feed").events)
    assert parsed >= len(REAL_WORLD) * 0.8


@pytest.mark.corpus
@pytest.mark.parametrize(
    "path", REAL_WORLD or [None], ids=lambda p: p.parent.name[:8] if p else "absent"
)
def test_real_world_feeds_parse_or_fail_cleanly(path: Path | None) -> None:
    corpus("feeds")
    assert path is not None
    try:
        parsed = parse_feed(path.read_bytes(), "https://example.org/feed")
    except ParseError:
        return
    for event in parsed.events:
        assert isinstance(event.title, str)
        assert event.published is None or event.published.tzinfo is not None
        assert event.actor.name is None or not re.search(r"\S@\S", event.actor.name)
        assert event.url is None or event.url.startswith(("http://", "https://"))


@pytest.mark.corpus
def test_rss_fields() -> None:
    parsed = parse_feed(reader_file("full.rss").read_bytes(), "http://www.example.com/feed")
    first = parsed.events[0]
    assert first.external_id == "7bd204c6-1655-4c27-aeee-53f933c5395f"
    assert first.title == "Example entry"
    assert first.url == "http://www.example.com/blog/post/1"
    assert (
        first.published is not None and first.published.isoformat() == "2009-09-06T16:20:00+00:00"
    )
    assert parsed.min_interval == 1800 * 60


@pytest.mark.corpus
def test_json_feed_fields() -> None:
    parsed = parse_feed(reader_file("full.json").read_bytes(), "https://example.org/feed.json")
    first = parsed.events[0]
    assert first.external_id == "2"
    assert first.title == "Title"
    assert 'href="http://example.com/"' in first.content_html
    assert first.actor.email == "joe@example.com"
    assert (
        first.published is not None and first.published.isoformat() == "2020-01-02T21:00:00+00:00"
    )


@pytest.mark.corpus
def test_atom_from_corpus() -> None:
    parsed = parse_feed(reader_file("full.atom").read_bytes(), "https://example.org/feed.atom")
    assert parsed.events and all(e.external_id for e in parsed.events)


# --- polling hints ------------------------------------------------------------


def sy(period: str, frequency: str | None = None) -> str:
    hint = f"<sy:updatePeriod>{period}</sy:updatePeriod>"
    if frequency is not None:
        hint += f"<sy:updateFrequency>{frequency}</sy:updateFrequency>"
    return hint


def channel(extra: str) -> bytes:
    return (
        '<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        f"<title>t</title>{extra}<item><title>a</title><guid>1</guid></item></channel></rss>"
    ).encode()


@pytest.mark.parametrize(
    ("hints", "seconds"),
    [
        ("", None),
        ("<ttl>30</ttl>", 1800),
        ("<ttl>soon</ttl>", None),
        ("<sy:updatePeriod>daily</sy:updatePeriod>", 86400),  # frequency defaults to 1
        (sy(" Weekly ", "7"), 86400),
        (sy("hourly", "0"), 3600),  # no frequency is 0
        (sy("fortnightly"), None),
        # both: the larger is the bound
        ("<ttl>120</ttl>" + sy("hourly"), 7200),
        ("<ttl>5</ttl>" + sy("daily", "4"), 21600),
    ],
)  # fmt: skip
def test_ttl_and_syndication_hints_give_the_larger_lower_bound(
    hints: str, seconds: float | None
) -> None:
    assert parse_feed(channel(hints), "https://e.org/feed").min_interval == seconds


@pytest.mark.corpus
def test_polling_hints_of_real_feeds() -> None:
    assert parse_feed(real_world(NEXT_WEB), "https://e.org/f").min_interval == 3600  # hourly / 1
    assert parse_feed(real_world(OFF_MENU), "https://e.org/f").min_interval == 3600  # ttl 60


# --- encodings ----------------------------------------------------------------


def titles(body: bytes, content_type: str | None = None) -> list[str]:
    return [e.title for e in parse_feed(body, "https://e.org/feed", content_type).events]


@pytest.mark.corpus
def test_declared_encodings_that_lie_and_byte_order_marks() -> None:
    """A real UTF-8 feed with curly quotes and dashes, made into what servers
    really send."""
    body = real_world(GUARDIAN)
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    want = titles(body)
    assert sum(not t.isascii() for t in want) > 10
    text = body.decode("utf-8")
    latin1_declared = body.replace(b'encoding="utf-8"', b'encoding="ISO-8859-1"', 1)
    assert titles(latin1_declared) == want  # valid UTF-8 wins over the declaration
    assert titles(body, "text/xml; charset=iso-8859-1") == want  # and over HTTP's
    assert titles(b"\xef\xbb\xbf" + latin1_declared) == want  # a BOM is believed
    utf16 = text.replace('encoding="utf-8"', 'encoding="UTF-16"', 1).encode("utf-16")
    assert titles(utf16) == want
    # windows-1252 bytes declared as UTF-8: feedparser's last resort reads them.
    assert titles(text.encode("windows-1252", "replace")) == [
        t.encode("windows-1252", "replace").decode("windows-1252") for t in want
    ]


def test_the_http_charset_decodes_undeclared_bytes() -> None:
    body = '<?xml version="1.0"?><rss version="2.0"><channel><item><title>Привет</title>'
    koi8 = (body + "<guid>1</guid></item></channel></rss>").encode("koi8-r")
    assert titles(koi8, "application/rss+xml; charset=KOI8-R") == ["Привет"]
    assert titles(koi8, "text/xml; charset=no-such-codec") != ["Привет"]  # no crash either
    # A declaration in the document outranks the server's default charset.
    declared = koi8.replace(b'version="1.0"', b'version="1.0" encoding="koi8-r"', 1)
    assert titles(declared, "text/xml; charset=iso-8859-1") == ["Привет"]


@pytest.mark.corpus
@pytest.mark.parametrize("path", ENCODING_TESTS or [None], ids=lambda p: p.name if p else "absent")
def test_feedparser_encoding_expectations_hold_after_sanitising(path: Path | None) -> None:
    """feedparser's encoding tests that name the decoded text of the first
    entry: the same text must come out of parse_feed and prepare (HTML is
    compared as text: nh3 writes `&#146;` as the character it means)."""
    corpus("feeds")
    assert path is not None
    found = ENTRY_TEXT.fullmatch(expectation(path))
    assert found is not None
    want = ast.literal_eval(found.group(1)) if found.group(1) else chr(int(found.group(2)))
    header = re.search(
        r"Header:\s*Content-type:\s*(.*)", path.read_bytes()[:3000].decode("latin-1")
    )
    events = parse_feed(
        path.read_bytes(), "https://e.org/", header and header.group(1).strip()
    ).events
    [first, *_] = prepare(events)

    def text(fragment: str) -> str:
        return html.unescape(re.sub(r"\s*/?>", ">", fragment))

    assert text(first.data.content_html) == text(want)


# --- relative URLs --------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize("path", DOCURI_TESTS or [None], ids=lambda p: p.name if p else "absent")
def test_relative_urls_resolve_against_the_feeds_own_url(path: Path | None) -> None:
    """feedparser's tests of URLs relative to the document: the entry's link,
    its author's URL and the links in its content and summary come out
    absolute, as feedparser's own expectations say."""
    corpus("feeds")
    assert path is not None
    found = ENTRY_URL.fullmatch(expectation(path))
    assert found is not None
    field, want = found.groups()
    url = f"http://127.0.0.1:8097/tests/wellformed/base/{path.name}"
    events, _ = settle_identities(parse_feed(path.read_bytes(), url).events, None)
    [item] = prepare(events)
    if field in ("link", "links"):
        assert item.data.url == want
    elif field == "author_detail":
        assert item.data.actor.url == want
    else:  # content, summary, description: the link inside
        [href] = re.findall(r'href="([^"]*)"', want)
        assert f'href="{href}"' in item.data.content_html


@pytest.mark.corpus
@pytest.mark.parametrize(
    "path", XML_BASE_CONTENT or [None], ids=lambda p: p.name if p else "absent"
)
def test_xml_base_governs_relative_urls_in_content(path: Path | None) -> None:
    corpus("feeds")
    assert path is not None
    found = re.fullmatch(
        r"not bozo and entries\[0\]\['content'\]\[0\]\['base'\] == '(.*)'", expectation(path)
    )
    assert found, path
    [item] = prepare(parse_feed(path.read_bytes(), "https://elsewhere.example/feed").events)
    assert f'href="{found.group(1)}test.html"' in item.data.content_html


def test_links_and_enclosures_resolve_and_padding_is_trimmed() -> None:
    body = b"""<rss version="2.0"><channel><title>t</title><link>https://site.example/</link>
    <item><title>a</title><link> posts/1.html </link><guid>1</guid>
      <enclosure url="../media/a.mp3" type="audio/mpeg" length="12"/>
      <description>&lt;img src="i.png"&gt;</description></item>
    <item><title>b</title><guid>2</guid>
      <description>&lt;a href="/x"&gt;x&lt;/a&gt;</description></item>
    </channel></rss>"""
    one, two = parse_feed(body, "https://feeds.example/blog/rss.xml").events
    assert one.url == "https://feeds.example/blog/posts/1.html"
    assert one.extra["attachments"][0]["url"] == "https://feeds.example/media/a.mp3"
    # No link: the content's relative URLs resolve against the feed's URL.
    [_, prepared] = prepare([one, two])
    assert 'href="https://feeds.example/x"' in prepared.data.content_html
    # A local file's feed: relative links resolve against the site it names.
    [local, _] = parse_feed(body, "file:///srv/feeds/blog.xml").events
    assert local.url == "https://site.example/posts/1.html"


def test_junk_links_are_dropped_not_fatal() -> None:
    body = b"""<rss version="2.0"><channel><title>t</title>
    <item><title>a</title><link>//[bad</link><guid>1</guid><enclosure url="" type="x/y"/></item>
    </channel></rss>"""
    [event] = parse_feed(body, "https://e.org/feed").events
    assert event.url is None and "attachments" not in event.extra


# --- attachments --------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize("path", PODCASTS or [None], ids=lambda p: p.stem if p else "absent")
def test_every_enclosure_podcastparser_finds_is_an_attachment(path: Path | None) -> None:
    """gpodder's podcastparser, run on the same files, recorded the enclosures
    it found (resolved against file://tests/data/): each is among ours."""
    corpus("feeds")
    assert path is not None
    want = {
        enclosure["url"]
        for episode in json.loads(path.with_suffix(".json").read_text())["episodes"]
        for enclosure in episode["enclosures"]
    }
    try:
        events = parse_feed(path.read_bytes(), f"file://tests/data/{path.name}").events
    except ParseError:
        events = []
    ours = {a["url"] for e in events for a in e.extra.get("attachments", ())}
    assert want <= ours


@pytest.mark.corpus
def test_enclosures_and_media_of_real_feeds() -> None:
    [episode, *_] = parse_feed(real_world(OFF_MENU), "https://e.org/f").events
    [mp3] = episode.extra["attachments"]
    assert mp3["type"] == "audio/mpeg" and mp3["length"] > 1_000_000
    assert mp3["url"].startswith("https://") and mp3["url"].endswith(".mp3")
    [video, *_] = parse_feed(real_world(CRITICAL_ROLE), "https://e.org/f").events
    media, thumbnail = video.extra["attachments"]  # media:group's content and thumbnail
    assert media["type"] == "application/x-shockwave-flash" and media["length"] is None
    assert thumbnail["url"].endswith("hqdefault.jpg") and thumbnail["type"] is None
    [record] = parse_feed(corpus("feeds", "atoma", "json_feed", "podcast.json").read_bytes(),
                          "https://therecord.co/feed.json").events[:1]  # fmt: skip
    assert record.extra["attachments"][0] == {
        "url": "http://therecord.co/downloads/The-Record-sp1e1-ChrisParrish.m4a",
        "type": "audio/x-m4a",
        "length": 89970236,
    }


def test_atom_enclosure_links_and_one_entry_per_url() -> None:
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"
      xml:base="https://e.org/pod/"><title>t</title><id>f</id><updated>2026-01-01T00:00:00Z</updated>
      <entry><id>1</id><title>a</title><updated>2026-01-01T00:00:00Z</updated>
        <link rel="enclosure" href="a.ogg" type="audio/ogg" length="0"/>
        <media:content url="https://e.org/pod/a.ogg" type="audio/ogg" fileSize="77"/>
        <link rel="enclosure" href="javascript:alert(1)"/></entry></feed>"""
    [event] = parse_feed(body, "https://e.org/feed").events
    [prepared] = prepare([event])
    # "0" is no length; the duplicate from media:content is dropped, not merged.
    assert prepared.data.extra["attachments"] == [
        {"url": "https://e.org/pod/a.ogg", "type": "audio/ogg", "length": None}
    ]


# --- authors and dates ----------------------------------------------------------


@pytest.mark.corpus
def test_the_feeds_author_stands_in_for_entries_without_one() -> None:
    nasa = parse_feed(real_world(NASA), "https://e.org/f").events
    assert {e.actor.email for e in nasa} == {"managingeditor@nasa.gov"}
    assert {e.actor.name for e in nasa} == {None}  # an address is never a name
    buzzfeed = parse_feed(real_world(BUZZFEED), "https://e.org/f").events[0].actor
    assert buzzfeed.name is None and buzzfeed.url == "https://www.buzzfeed.com/about"
    assert buzzfeed.email == "editor@buzzfeed.com"
    macrumors = parse_feed(real_world(MACRUMORS), "https://e.org/f").events[0].actor
    assert macrumors.name == "Juli Clover"  # dc:creator


@pytest.mark.parametrize(
    ("author", "name", "email"),
    [
        ("<author>jane@e.org (Jane Doe)</author>", "Jane Doe", "jane@e.org"),
        ("<dc:creator>Jane Doe &lt;jane@e.org&gt;</dc:creator>", "Jane Doe", "jane@e.org"),
        ("<dc:creator>jdoe@intranet</dc:creator>", None, "jdoe@intranet"),
        ("<dc:creator>Jane (@jane)</dc:creator>", "Jane (@jane)", None),  # a handle, not an address
        ("", "Ed Itor", "ed@e.org"),  # the channel's managingEditor
    ],
)
def test_entry_authors(author: str, name: str | None, email: str | None) -> None:
    body = f"""<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
    <title>t</title><managingEditor>ed@e.org (Ed Itor)</managingEditor>
    <item><title>a</title><guid>1</guid>{author}</item></channel></rss>"""
    [event] = parse_feed(body.encode(), "https://e.org/feed").events
    assert (event.actor.name, event.actor.email) == (name, email)


def test_json_feed_authors_fall_back_to_the_feeds() -> None:
    body = json.dumps({
        "version": "https://jsonfeed.org/version/1.1", "title": "t",
        "authors": [{"name": "Feed Person", "url": "/about"}],
        "items": [{"id": "1", "content_text": "x"},
                  {"id": "2", "content_text": "y", "authors": [{"name": "jane@e.org"}]}],
    }).encode()  # fmt: skip
    one, two = parse_feed(body, "https://e.org/feed.json").events
    assert one.actor.name == "Feed Person" and one.actor.url == "https://e.org/about"
    assert two.actor.name is None and two.actor.email == "jane@e.org"


@pytest.mark.parametrize(
    "date",
    ["", "<pubDate>sometime soon</pubDate>", "<pubDate>Mon, 31 Feb 2025 25:61:00 GMT</pubDate>"],
)
def test_odd_or_missing_dates_mean_first_seen(date: str) -> None:
    body = f'<rss version="2.0"><channel><item><title>a</title>{date}</item></channel></rss>'
    [event] = parse_feed(body.encode(), "https://e.org/feed").events
    assert event.published is None and event.updated is None
    assert event_time(event, NOW) == NOW


def test_json_feed_dates_in_either_format() -> None:
    body = json.dumps({"items": [
        {"id": "1", "date_published": "2024-05-01T10:00:00+02:00"},
        {"id": "2", "date_published": "Wed, 01 May 2024 10:00:00 +0200"},
        {"id": "3", "date_published": "someday", "date_modified": "2024-05-01T08:00:00Z"},
        {"id": "4", "date_published": "0001-01-01T00:00:00+01:00"},  # before the year 1 in UTC
    ]}).encode()  # fmt: skip
    one, two, three, four = parse_feed(body, "https://e.org/feed.json").events
    when = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert one.published == two.published == three.updated == when
    assert three.published is None and four.published is None


def test_json_feed_that_is_not_utf8_still_parses() -> None:
    body = '{"items": [{"id": "1", "title": "Café"}]}'.encode("windows-1252")
    assert titles(body) == ["Café"]


# --- polling through the connector and the store ---------------------------------


def local_context(tmp_path: Path, now: datetime) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(
        source_id="blog", now=now, resources=Resources(), run_cpu=run_cpu,
        local_dirs=(tmp_path.resolve(),), base_dir=tmp_path,
    )  # fmt: skip


async def poll_once(
    tmp_path: Path, body: bytes, state: dict[str, Any] | None, now: datetime, name: str = "feed.xml"
) -> PollResult:
    """One poll of a local feed file, written with `now` as its time: the
    same body at the same time is a file the poll has seen."""
    path = tmp_path / name
    path.write_bytes(body)
    stamp = (now - datetime(2020, 1, 1, tzinfo=UTC)).total_seconds()
    os.utime(path, (stamp, stamp))
    return await FeedConnector(FeedOptions(url=name)).poll(state, local_context(tmp_path, now))


async def poll_file(
    tmp_path: Path, body: bytes, state: dict[str, Any] | None, now: datetime
) -> tuple[list[EventData], dict[str, Any]]:
    result = await poll_once(tmp_path, body, state, now)
    assert result.state is not None
    return result.events, result.state


async def test_a_dateless_feed_polled_twice_adds_nothing_the_second_time(tmp_path: Path) -> None:
    body = b"""<rss version="2.0"><channel><title>Intranet notices</title>
      <item><title>Canteen closed</title><description>Friday</description></item>
      <item><title>Fire drill</title><description>Tuesday</description></item>
      <item><description>An untitled, undated note</description></item>
      <item><description>Another one</description></item></channel></rss>"""
    src = feed_source("feed.xml")
    store = Store(store_url(tmp_path))
    try:
        store.sync_sources([src], NOW)
        first_ids: list[int] = []
        state: dict[str, Any] | None = None
        for n, now in enumerate((NOW, NOW + timedelta(hours=1), NOW + timedelta(days=3))):
            events, state = await poll_file(tmp_path, body, state, now)
            assert len(events) == 4
            new = store.record_poll(src, prepare(events), state=state, now=now,
                                    next_poll_at=now + timedelta(minutes=10))  # fmt: skip
            if n == 0:
                first_ids = new
            else:
                assert new == []
        assert state is not None and state["identity"] == "hash"
        stored = [store.get_event(i, viewer=None) for i in first_ids]
        assert len(stored) == 4 and all(e is not None and e.published == NOW for e in stored)
    finally:
        store.close()


async def test_the_identity_scheme_lives_in_the_source_state(tmp_path: Path) -> None:
    item = "<item><title>{0}</title><link>https://e.org/{0}</link><guid>{1}</guid></item>"
    feed = '<rss version="2.0"><channel><title>t</title>{}</channel></rss>'
    unique = feed.format(item.format("a", "g-a") + item.format("b", "g-b")).encode()
    events, state = await poll_file(tmp_path, unique, None, NOW)
    assert [e.external_id for e in events] == ["g-a", "g-b"] and state["identity"] == "guid"
    # A CMS bug gives two items one guid: the source moves to links, and the
    # items seen before keep the identity they were stored under.
    shared = feed.format(
        item.format("a", "g-a") + item.format("b", "g-a") + item.format("c", "g-a")
    )
    events, state = await poll_file(tmp_path, shared.encode(), state, NOW + timedelta(hours=1))
    assert [e.external_id for e in events] == ["g-a", "g-b", "https://e.org/c"]
    assert state["identity"] == "link"
    events, state = await poll_file(tmp_path, unique, state, NOW + timedelta(hours=2))
    assert [e.external_id for e in events] == ["g-a", "g-b"] and state["identity"] == "link"


def rss(*items: str) -> bytes:
    return (
        '<rss version="2.0"><channel><title>t</title>'
        f"<managingEditor>Jane Doe &lt;jane@e.org&gt;</managingEditor>{''.join(items)}"
        "</channel></rss>"
    ).encode()


def rss_item(
    slug: str, title: str | None = None, link: str | None = None, guid: bool = True
) -> str:
    guid_element = f"<guid>g-{slug}</guid>" if guid else ""
    return (
        f"<item><title>{title or slug}</title><link>{link or f'https://e.org/{slug}'}</link>"
        f"<pubDate>Fri, 27 Nov 2026 10:00:00 GMT</pubDate>{guid_element}</item>"
    )


def feed_source(url: str) -> Any:
    """A config-file feed source; a local `url` is read from under the test's
    own directory (local_context), so the config allows its directory."""
    data = {
        "files": {"allowed_dirs": ["."]},
        "sources": [{"id": "blog", "kind": "feed", "url": url}],
    }
    return parse_config(data).sources[0]


async def test_the_first_poll_under_new_rules_rebaselines(tmp_path: Path) -> None:
    """Rules 2 let the feed's author stand in for entries without one: the
    items an older connector stored hash otherwise now. Without a rebaseline
    every one of them would come back as an Update."""
    src, body = feed_source("feed.xml"), rss(rss_item("a"), rss_item("b"))
    store = Store(store_url(tmp_path))
    try:
        store.sync_sources([src], NOW)
        fresh = await poll_once(tmp_path, body, None, NOW)
        assert not fresh.rebaseline and fresh.state is not None  # nothing stored to rebaseline
        assert fresh.state["rules"] == RULES
        # What the connector before rules 2 stored: no actor, no marker.
        legacy = {k: v for k, v in fresh.state.items() if k != "rules"}
        old_items = prepare([replace(e, actor=Actor()) for e in fresh.events])
        assert len(store.record_poll(src, old_items, state=legacy, now=NOW, next_poll_at=NOW)) == 2

        state, _ = store.source_state("blog")
        upgraded = await poll_once(tmp_path, body, state, NOW)  # the file has not changed
        assert upgraded.rebaseline and upgraded.state is not None
        assert upgraded.state["rules"] == RULES
        assert [e.actor for e in upgraded.events] == [Actor("Jane Doe", "jane@e.org")] * 2
        record = PollRecord(
            src, prepare(upgraded.events), upgraded.state, NOW, NOW, rebaseline=True
        )
        assert store.record([record]) == [[]]

        # After it, polls are ordinary: an edit is an Update, a new item an event.
        later = NOW + timedelta(hours=1)
        edited = rss(rss_item("a", "A, corrected"), rss_item("b"), rss_item("c"))
        state, _ = store.source_state("blog")
        ordinary = await poll_once(tmp_path, edited, state, later)
        assert not ordinary.rebaseline
        ids = store.record_poll(src, prepare(ordinary.events), state=ordinary.state, now=later,
                                next_poll_at=later)  # fmt: skip
        stored = [store.get_event(i, viewer=None) for i in ids]
        assert sorted((e.verb, e.title) for e in stored if e) == [
            ("Create", "c"),
            ("Update", "A, corrected"),
        ]
    finally:
        store.close()


async def test_new_options_keep_how_the_source_identifies_items(tmp_path: Path) -> None:
    """The feed moved to a new address, where its entries carry guids now.
    Its source stays on the scheme it had, so nothing is announced again."""
    home = "https://e.org/"
    before = [rss_item("a", guid=False), *(rss_item(s, link=home, guid=False) for s in "bc")]
    after = [rss_item("a"), *(rss_item(s, link=home) for s in "bc")]
    store = Store(store_url(tmp_path))
    try:
        store.sync_sources([feed_source("feed.xml")], NOW)
        first = await poll_once(tmp_path, rss(*before), None, NOW)
        assert first.state is not None and first.state["identity"] == "hash"
        assert len(first.state["ids"]) == 1  # a's link is unique; its hash identity is carried
        ids = store.record_poll(feed_source("feed.xml"), prepare(first.events), state=first.state,
                                now=NOW, next_poll_at=NOW)  # fmt: skip
        assert len(ids) == 3

        moved = feed_source("moved.xml")
        store.sync_sources([moved], NOW)
        carried, _ = store.source_state("blog")
        # The old file's version is dropped: it says nothing of the new one.
        assert carried == {"identity": "hash", "ids": first.state["ids"], "rules": RULES}
        later = NOW + timedelta(hours=1)
        second = await poll_once(tmp_path, rss(*after), carried, later, name="moved.xml")
        assert not second.rebaseline
        assert [e.external_id for e in second.events] == [e.external_id for e in first.events]
        assert store.record_poll(moved, prepare(second.events), state=second.state, now=later,
                                 next_poll_at=later) == []  # fmt: skip
    finally:
        store.close()


async def test_a_carried_state_from_older_rules_still_rebaselines(tmp_path: Path) -> None:
    legacy = {"etag": '"e"', "last_modified": "x", "identity": "link", "ids": {"k": "g"}}
    carried = FeedConnector.carry_state(legacy)
    assert carried == {"identity": "link", "ids": {"k": "g"}, "rules": 1}  # the older rules
    assert FeedConnector.carry_state(None) is None
    assert FeedConnector.carry_state({"rules": RULES, "version": "v"}) == {"rules": RULES}
    assert (await poll_once(tmp_path, rss(rss_item("a")), carried, NOW)).rebaseline


# --- edits --------------------------------------------------------------------


def edit(body: bytes, start: bytes, tag: bytes, value: bytes, nth: int = 1) -> bytes:
    """`body` with the text of the first `tag` element inside the `nth`
    element opening with `start` replaced by `value`."""
    at = -1
    for _ in range(nth + 1):
        at = body.index(start, at + 1)
    open_at = body.index(b"<" + tag, at)
    text_at = body.index(b">", open_at) + 1
    return body[:text_at] + value + body[body.index(b"</" + tag + b">", text_at) :]


def versions(
    before: bytes, after: bytes, url: str = "https://e.org/feed"
) -> tuple[list[Any], dict[str, str]]:
    """What decide() appends when `after` is polled with `before` stored."""
    old, state = settle_identities(parse_feed(before, url).events, None)
    stored = prepare(old)
    new, _ = settle_identities(parse_feed(after, url).events, state)
    known = {p.external_id: p.content_hash for p in stored}
    return decide(prepare(new), known), known


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("feed", "start", "date", "drop_guids"),
    [
        (MACRUMORS, b"<item>", b"pubDate", False),
        (THE_VERGE, b"<entry>", b"updated", False),
        (MACRUMORS, b"<item>", b"pubDate", True),  # no guids: the link is the identity
    ],
    ids=["rss", "atom", "rss-without-guids"],
)
def test_an_edited_title_is_one_update_and_a_new_date_is_none(
    feed: str, start: bytes, date: bytes, drop_guids: bool
) -> None:
    body = real_world(feed)
    if drop_guids:
        body = re.sub(rb"<guid[^>]*>[^<]*</guid>", b"", body)
    edited = edit(body, start, b"title", b"Corrected: a new headline", nth=2)
    [update], known = versions(body, edited)
    assert update.data.verb == "Update" and update.data.title == "Corrected: a new headline"
    assert update.external_id in known
    when = b"2027-01-01T00:00:00Z" if date == b"updated" else b"Fri, 01 Jan 2027 00:00:00 GMT"
    redated = edit(body, start, date, when, nth=2)
    was, now = (parse_feed(b, "https://e.org/feed").events[2] for b in (body, redated))
    assert (was.published, was.updated) != (now.published, now.updated)
    assert versions(body, redated)[0] == []
    assert versions(body, body)[0] == []


@pytest.mark.corpus
def test_a_hash_identified_feed_keeps_edits_as_updates_while_links_are_unique() -> None:
    """No guids and shared links would make every item a hash of title and
    date, where an edited title is a new item; items whose link is unique
    keep their identity through the carried ids."""
    body = re.sub(rb"<guid[^>]*>[^<]*</guid>", b"", real_world(MACRUMORS))
    first = re.search(rb"<link>([^<]+)</link>", body.split(b"<item>", 1)[1])
    assert first is not None
    shared = edit(body, b"<item>", b"link", first.group(1), nth=2)  # two items, one link
    appended, _ = versions(shared, edit(shared, b"<item>", b"title", b"Edited", nth=5))
    assert [(p.data.verb, p.data.title) for p in appended] == [("Update", "Edited")]
    appended, _ = versions(shared, edit(shared, b"<item>", b"title", b"Edited", nth=2))
    assert [(p.data.verb, p.data.title) for p in appended] == [("Create", "Edited")]


def test_entity_expansion_is_defused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<rss version="2.0"><channel><title>t</title><item><title>&c;</title><guid>1</guid>'
        b"</item></channel></rss>"
    )
    parsed = parse_feed(bomb, "https://example.org/")
    assert len(parsed.events) == 1
    assert "aaaaaaaaaa" * 100 not in parsed.events[0].title


QUADRATIC_ITEM = (
    b'<rss version="2.0"><channel><title>t</title><item><guid>1</guid><title>'
    + b"&big;" * 10_000
    + b"</title></item></channel></rss>"
)


@pytest.mark.parametrize(
    "prolog",
    [
        # feedparser re-declares "safe" entities (no & in the value) and expands them.
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY big "' + b"x" * 10_000 + b'">\n]>\n',
        # ...wherever they hide before the first element: after a long comment,
        b'<?xml version="1.0"?><!--'
        + b"c" * 5_000
        + b'-->\n<!DOCTYPE rss [\n<!ENTITY big "'
        + b"x" * 10_000
        + b'">\n]>\n',
        # or with no DOCTYPE around them at all.
        b'<?xml version="1.0"?>\n<!ENTITY big "' + b"x" * 10_000 + b'">\n',
    ],
    ids=["doctype", "after-a-comment", "bare"],
)
def test_a_quadratic_entity_bomb_is_not_expanded(prolog: bytes) -> None:
    for body in (prolog + QUADRATIC_ITEM, (prolog + QUADRATIC_ITEM).decode().encode("utf-16")):
        try:
            events = parse_feed(body, "https://example.org/").events
        except ParseError:
            continue
        assert all(len(e.title) < 100_000 for e in events)


def test_a_doctype_without_internal_subset_is_kept() -> None:
    netscape = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC'
        b' "-//Netscape Communications//DTD RSS 0.91//EN"'
        b' "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
    )
    assert defuse_prolog(netscape + b"<!-- hi --><rss/>") == netscape + b"<rss/>"
    plain = b'<?xml version="1.0"?><rss version="2.0"/>'
    assert defuse_prolog(plain) is plain  # nothing to cut: not even copied


def test_doctype_bombs_are_stripped_in_linear_time() -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(ParseError):
        parse_feed(b"<!DOCTYPE x [" * 50_000, "https://example.org/")
    assert time.perf_counter() - started < 2.0


def test_json_feed_fields_of_the_wrong_type_are_ignored() -> None:
    body = (
        rb'{"author": "not an object", "items": [{"id": 1, "title": 2, "url": ["x"],'
        rb' "author": "Jane", "tags": "abc", "content_text": "a\n\nb"}, "junk"]}'
    )
    [event] = parse_feed(body, "https://example.org/feed.json").events
    assert event.external_id == "1" and event.title == "" and event.url is None
    assert event.tags == () and event.actor.name is None
    assert event.content_html == "<p>a</p><p>b</p>"


def test_garbage_raises_parse_error_naming_the_url() -> None:
    with pytest.raises(ParseError, match=r"https://example\.org/x"):
        parse_feed(b"<html><body>Service unavailable</body></html>", "https://example.org/x")
    with pytest.raises(ParseError, match="JSON"):
        parse_feed(b'{"items": ', "https://example.org/x")


# --- attachments in personal feeds, read back ------------------------------------


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_personal_feeds_carry_attachments_that_read_back(fmt: str) -> None:
    from aggregator.types import Actor, Event
    from web.feeds import RENDER, FeedSpec

    mp3 = {"url": "https://e.org/a.mp3", "type": "audio/mpeg", "length": 1234}
    jpg = {"url": "https://e.org/b.jpg", "type": None, "length": None}
    event = Event(
        id=1, source_id="pod", kind="feed", external_id="x", content_hash="h", verb="Create",
        object_type="Article", title="Episode", summary="s", content_html="<p>s</p>",
        url="https://e.org/1", actor=Actor("Jane"), published=NOW, updated=None, tags=(),
        thread_id=None, extra={"attachments": [mp3, jpg]}, audience=(), ingested_at=NOW,
    )  # fmt: skip
    spec = FeedSpec("all", "All", "", "https://t.example", "https://t.example/f", [event], NOW)
    [read] = parse_feed(RENDER[fmt](spec), "https://t.example/f").events
    want = {
        "atom": [mp3, jpg],
        "rss": [mp3],  # RSS has room for one
        "json": [mp3, {**jpg, "type": "application/octet-stream"}],
    }[fmt]
    assert read.extra["attachments"] == want
    assert read.url == "https://e.org/1"  # an enclosure is not the alternate link
