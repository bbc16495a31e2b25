"""The feed connector's parser on real-world feeds from ../shared/corpus."""

from pathlib import Path

import pytest

from aggregator.exceptions import ParseError
from connectors.feed import parse_feed

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "feeds"
REAL_WORLD = sorted((CORPUS / "rowanmanning-sample-feeds" / "real-world").glob("*/feed.xml"))
READER = CORPUS / "lemon24-reader"


def test_corpus_is_present() -> None:
    assert len(REAL_WORLD) >= 20, f"expected the shared corpus at {CORPUS}"


@pytest.mark.parametrize("path", REAL_WORLD, ids=lambda p: p.parent.name[:8])
def test_real_world_feeds_parse_or_fail_cleanly(path: Path) -> None:
    try:
        parsed = parse_feed(path.read_bytes(), "https://example.org/feed")
    except ParseError:
        return
    for event in parsed.events:
        assert isinstance(event.title, str)
        assert event.published is None or event.published.tzinfo is not None
        assert event.actor.name is None or "@" not in event.actor.name


def test_rss_fields() -> None:
    parsed = parse_feed((READER / "full.rss").read_bytes(), "http://www.example.com/feed")
    first = parsed.events[0]
    assert first.external_id == "7bd204c6-1655-4c27-aeee-53f933c5395f"
    assert first.title == "Example entry"
    assert first.url == "http://www.example.com/blog/post/1"
    assert (
        first.published is not None and first.published.isoformat() == "2009-09-06T16:20:00+00:00"
    )
    assert parsed.ttl == 1800 * 60


def test_json_feed_fields() -> None:
    parsed = parse_feed((READER / "full.json").read_bytes(), "https://example.org/feed.json")
    first = parsed.events[0]
    assert first.external_id == "2"
    assert first.title == "Title"
    assert 'href="http://example.com/"' in first.content_html
    assert first.actor.email == "joe@example.com"
    assert (
        first.published is not None and first.published.isoformat() == "2020-01-02T21:00:00+00:00"
    )


def test_atom_from_corpus() -> None:
    parsed = parse_feed((READER / "full.atom").read_bytes(), "https://example.org/feed.atom")
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


def test_garbage_raises_parse_error_naming_the_url() -> None:
    with pytest.raises(ParseError, match=r"https://example\.org/x"):
        parse_feed(b"<html><body>Service unavailable</body></html>", "https://example.org/x")
    with pytest.raises(ParseError, match="JSON"):
        parse_feed(b'{"items": ', "https://example.org/x")
