"""aggregator.opml: parsing with line numbers, folders and categories as tags,
duplicates, the import through the store, and an export that imports again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.config import parse_config
from aggregator.opml import (
    OpmlError,
    Problem,
    audience_problems,
    export_opml,
    import_feeds,
    parse_opml,
    url_key,
)
from aggregator.store import Store
from tests.stores import store_url

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)

# Line numbers matter here: the outlines are on the lines the tests name.
LIST = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>Reading list</title></head>
  <body>
    <outline type="rss" text="Court rulings" xmlUrl="https://rulings.example.com/feed.xml"/>
    <outline text="Tax">
      <outline text="Bulletin" xmlurl="https://tax.example.com/b.rss" category="/Law/Tax,weekly"/>
      <outline text="A note, not a feed"/>
      <outline text="Partners">
        <outline type="rss" title="Ben" text="ignored" xmlUrl="https://blogs.example.com/ben"/>
      </outline>
    </outline>
    <outline type="rss" text="Rulings again" xmlUrl="HTTPS://Rulings.Example.com:443/feed.xml#top"/>
    <outline type="rss" text="Local" xmlUrl="file:///etc/passwd"/>
    <outline type="rss" text="No URL at all"/>
  </body>
</opml>
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with one config-file source (a feed at a URL the list names
    again) and one config-file feed read from a local file."""
    (tmp_path / "local.xml").write_text("<rss/>")
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "files": {"allowed_dirs": ["."]},
            "sources": [
                {"id": "ben", "kind": "feed", "url": "https://blogs.example.com/ben",
                 "tags": ["people", "a/b,c"]},
                {"id": "disk", "kind": "feed", "url": "local.xml"},
            ],
        },
        tmp_path / "config.toml",
    )  # fmt: skip
    s = Store(config.store_url)
    s.sync_sources(config.sources, NOW, config_file=str(config.path))
    yield s
    s.close()


def test_feeds_come_with_their_line_and_folder_and_category_tags() -> None:
    parsed = parse_opml(LIST)
    found = {(f.line, f.url, f.title, f.tags) for f in parsed.feeds}
    assert found == {
        (5, "https://rulings.example.com/feed.xml", "Court rulings", ()),
        (7, "https://tax.example.com/b.rss", "Bulletin", ("Tax", "Law", "weekly")),
        (10, "https://blogs.example.com/ben", "Ben", ("Tax", "Partners")),
    }


def test_unusable_outlines_are_problems_with_their_line() -> None:
    problems = parse_opml(LIST).problems
    assert [(p.line, p.duplicate) for p in problems] == [
        (8, False), (13, True), (14, False), (15, False),
    ]  # fmt: skip
    by_line = {p.line: p.message for p in problems}
    assert "'A note, not a feed' has no xmlUrl" in by_line[8]
    assert "already on line 5" in by_line[13]
    assert "'file:///etc/passwd' is not an http(s) URL" in by_line[14]
    assert "'No URL at all' has no xmlUrl" in by_line[15]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            b"https://example.org/list.opml",
            "not an OPML subscription list: not well-formed XML (line 1",
        ),
        (b"<opml><body>\n<outline text='x'>\n</body></opml>", "line 3"),
        (b"<html><body/></html>", "root element is not <opml>"),
        (b"<opml version='2.0'><head/></opml>", "no <body>"),
        (b"<opml version='2.0'><body></body></opml>", "names no feeds"),
        (b"<opml><body>" + b"<outline text='f'>" * 5000, "line 1: elements nested more than 64"),
        (
            b'<!DOCTYPE opml [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<opml><body><outline text='&b;' xmlUrl='https://e.org/'/></body></opml>",
            "entity declarations are not allowed",
        ),
    ],
)
def test_what_is_not_an_opml_list_is_refused_as_a_whole(document: bytes, message: str) -> None:
    with pytest.raises(OpmlError, match=message.replace("(", r"\(")):
        parse_opml(document)


def test_url_keys_ignore_case_default_ports_and_fragments() -> None:
    assert url_key("HTTPS://Example.ORG:443/a?b=1#c") == url_key("https://example.org/a?b=1")
    assert url_key("http://example.org") == url_key("http://example.org/")
    assert url_key("http://example.org:8080/") != url_key("http://example.org/")
    assert url_key("https://example.org/A") != url_key("https://example.org/a")


def test_import_creates_web_sources_with_tags_and_counts_the_rest(store: Store) -> None:
    ticks: list[None] = []
    result = import_feeds(
        store, parse_opml(LIST), audience=["legal"], actor="cli:ops", now=NOW,
        progress=lambda: ticks.append(None),
    )  # fmt: skip
    assert [(c.source_id, c.outline.line) for c in result.created] == [
        ("court-rulings", 5), ("bulletin", 7),
    ]  # fmt: skip
    # Ben is a config-file source already; line 13 repeats line 5.
    assert (result.present, result.invalid) == (2, 3)
    assert [p.line for p in result.problems] == [8, 13, 14, 15]
    assert len(ticks) == 3  # one per feed of the list
    origin, raw = store.source_table("bulletin") or ("", {})
    assert origin == "db"
    assert raw == {
        "id": "bulletin", "kind": "feed", "url": "https://tax.example.com/b.rss",
        "title": "Bulletin", "audience": ["legal"], "tags": ["Tax", "Law", "weekly"],
    }  # fmt: skip
    entry = store.people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.target) == ("cli:ops", "source.create", "bulletin")

    again = import_feeds(store, parse_opml(LIST), audience=None, actor="cli:ops", now=NOW)
    assert (len(again.created), again.present, again.invalid) == (0, 4, 3)


def test_a_feed_the_store_refuses_is_invalid_with_its_line_and_reason(store: Store) -> None:
    document = b"""<opml version="2.0"><body>
<outline text="ok" xmlUrl="https://e.org/ok"/>
<outline text="creds" xmlUrl="https://user:pw@e.org/secret"/>
</body></opml>"""
    result = import_feeds(store, parse_opml(document), audience=None, actor="t", now=NOW)
    assert [c.source_id for c in result.created] == ["ok"]
    assert result.invalid == 1
    assert result.problems == [
        Problem(3, "https://e.org/secret: url: credentials do not belong in the URL: "
                   "use username and password"),  # the password is not echoed
    ]  # fmt: skip
    assert store.source_table("ok") is not None


SECRETS = b"""<opml version="2.0"><body>
<outline text="ok" xmlUrl="https://host.example/feed?token=x"/>
<outline text="twice" xmlUrl="https://bob:s3cret@host.example/feed?token=x"/>
<outline text="ftp" xmlUrl="ftp://bob:s3cret@host.example/feed?token=x"/>
<outline text="creds" xmlUrl="https://bob:s3cret@other.example:8443/f?token=x#frag"/>
</body></opml>"""


def test_problems_never_echo_passwords_or_query_strings(store: Store) -> None:
    result = import_feeds(store, parse_opml(SECRETS), audience=None, actor="t", now=NOW)
    assert [c.source_id for c in result.created] == ["ok"]
    assert [p.message for p in result.problems] == [
        "https://host.example/feed?… is already on line 2; skipped",
        "xmlUrl 'ftp://host.example/feed?…' is not an http(s) URL",
        "https://other.example:8443/f?…: url: credentials do not belong in the URL: "
        "use username and password",
    ]
    assert not any("s3cret" in p.message or "token" in p.message for p in result.problems)


def test_an_outline_named_like_the_alerts_source_gets_another_id(store: Store) -> None:
    document = b"""<opml version="2.0"><body>
<outline text="Tidings alerts" xmlUrl="https://e.org/alerts.xml"/>
</body></opml>"""
    result = import_feeds(store, parse_opml(document), audience=None, actor="t", now=NOW)
    assert result.problems == []
    assert [c.source_id for c in result.created] == ["tidings-alerts-2"]


def test_audience_problems_name_the_bad_group() -> None:
    assert audience_problems(["everyone", "legal"]) == []
    (problem,) = audience_problems(["bad group!"])
    assert problem.startswith("audience: 'bad group!': a group name is 1-64 letters")


def test_export_writes_every_http_feed_with_tags_and_imports_again(
    store: Store, tmp_path: Path
) -> None:
    store.create_source(
        {"id": "web", "kind": "feed", "url": "https://e.org/w.xml", "title": "Web & Co",
         "tags": ["news"]},
        actor="t", now=NOW,
    )  # fmt: skip
    export = export_opml(store, now=NOW)
    assert export.written == 2
    assert export.left_out == ["disk (a local file)"]
    text = export.document.decode()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert "<dateCreated>Mon, 02 Nov 2026 09:30:00 GMT</dateCreated>" in text
    assert 'title="Web &amp; Co"' in text and "file:" not in text

    parsed = parse_opml(export.document)
    assert parsed.problems == []
    assert {(f.url, f.title, f.tags) for f in parsed.feeds} == {
        ("https://blogs.example.com/ben", "ben", ("people", "a b c")),  # one tag still
        ("https://e.org/w.xml", "Web & Co", ("news",)),
    }
    fresh = Store(store_url(tmp_path, "fresh"))
    try:
        result = import_feeds(fresh, parsed, audience=None, actor="t", now=NOW)
        assert sorted(c.source_id for c in result.created) == ["ben", "web-co"]
    finally:
        fresh.close()


def test_export_keeps_a_token_in_a_url_and_says_so(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    url = "https://e.org/private.xml?token=s3cret&x=1"
    store.create_source({"id": "priv", "kind": "feed", "url": url}, actor="t", now=NOW)
    with caplog.at_level(logging.WARNING, logger="aggregator.opml"):
        export = export_opml(store, now=NOW)
    assert export.exposed == ["priv"]
    # Written whole (the list must work in another reader, and import again)...
    assert url in {f.url for f in parse_opml(export.document).feeds}
    # ...and said, naming the source, never the URL.
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "priv" in record.getMessage() and "s3cret" not in record.getMessage()
    assert "query string or user:password" in record.getMessage()


def test_export_without_secrets_warns_nothing(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aggregator.opml"):
        assert export_opml(store, now=NOW).exposed == []
    assert caplog.records == []
