"""The feed connector's parser on real-world feeds from the shared corpus
(tests/corpus.py says where it is)."""

import contextlib
from pathlib import Path

import pytest

from aggregator.exceptions import ParseError
from connectors.feed import parse_feed
from tests.corpus import corpus, files

REAL_WORLD = files("feeds", "rowanmanning-sample-feeds/real-world/*/feed.xml")


def reader_file(name: str) -> Path:
    return corpus("feeds", "lemon24-reader", name)


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
@pytest.mark.parametrize("path", REAL_WORLD or [None], ids=lambda p: p.parent.name[:8] if p else "absent")
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
        assert event.actor.name is None or "@" not in event.actor.name


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
    assert parsed.ttl == 1800 * 60


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
