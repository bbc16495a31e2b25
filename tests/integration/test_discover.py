"""Feed discovery against a real loopback HTTP server, and `tidings discover`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.connector import HttpSettings
from aggregator.exceptions import FetchError
from connectors.discover import COMMON_PATHS, PROBES_AT_ONCE, FoundFeed, discover, feed_links
from connectors.http import Fetcher, FetchResult
from tests.support import FeedServer, rss

pytestmark = pytest.mark.integration

SETTINGS = HttpSettings(connect_timeout=2, read_timeout=2, per_host=8)
HTML = "text/html; charset=utf-8"
ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom of the team</title>
<id>urn:x</id><updated>2026-11-01T00:00:00Z</updated></feed>"""
JSON_FEED = '{"version": "https://jsonfeed.org/version/1.1", "title": "Jason", "items": []}'

PAGE = """<!DOCTYPE html>
<html><head>
<title>  The team
  blog </title>
<base href="/blog/">
<link rel="stylesheet" href="site.css">
<link rel="alternate" type="application/rss+xml" href="feed.xml" title="Posts (RSS)">
<link rel="Alternate" type="application/atom+xml; charset=utf-8" href="/atom.xml#top">
<link rel="alternate" type="application/feed+json" href="{other}/feed.json" title="Posts (JSON)">
<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/7">
<link rel="alternate" hreflang="de" href="/de/">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
<link rel="alternate" type="application/rss+xml" href="feed.xml">
</head><body><p>Hello</p></body></html>
"""


async def find(url: str) -> list[FoundFeed]:
    async with Fetcher.open(SETTINGS) as fetcher:
        return await discover(fetcher, url)


async def test_an_address_that_is_a_feed_is_offered_as_itself(feed_server: FeedServer) -> None:
    feed_server.put("/rss", rss([{"guid": "a", "title": "A"}], title="Plain RSS"))
    feed_server.put("/atom", ATOM, content_type="application/atom+xml")
    feed_server.put("/json", JSON_FEED, content_type="application/feed+json")
    assert await find(feed_server.url("/rss")) == [
        FoundFeed(feed_server.url("/rss"), "rss", "Plain RSS", "self")
    ]
    assert await find(feed_server.url("/atom")) == [
        FoundFeed(feed_server.url("/atom"), "atom", "Atom of the team", "self")
    ]
    assert await find(feed_server.url("/json")) == [
        FoundFeed(feed_server.url("/json"), "json", "Jason", "self")
    ]
    assert {path for path, _ in feed_server.requests} == {"/rss", "/atom", "/json"}


async def test_a_page_offers_its_declared_feeds_resolved_against_base_and_redirect(
    feed_server: FeedServer,
) -> None:
    other = "https://feeds.example.net"
    feed_server.put("/team/", PAGE.format(other=other), content_type=HTML)
    # The page is reached through a redirect: links resolve against where it was found.
    feed_server.put("/old", b"", status=301, headers={"Location": "/team/"})
    found = await find(feed_server.url("/old"))
    assert found == [
        FoundFeed(feed_server.url("/blog/feed.xml"), "rss", "Posts (RSS)", "link"),
        FoundFeed(feed_server.url("/atom.xml"), "atom", "The team blog", "link"),
        FoundFeed(f"{other}/feed.json", "json", "Posts (JSON)", "link"),
    ]
    # Declared feeds are not fetched, and nothing is guessed.
    assert [path for path, _ in feed_server.requests] == ["/old", "/team/"]


async def test_without_declared_feeds_common_paths_are_probed(feed_server: FeedServer) -> None:
    feed_server.put("/about", "<html><title>About</title><p>no feeds</p></html>", content_type=HTML)
    body = rss([{"guid": "a", "title": "A"}], title="Guessed")
    feed_server.put("/feed", b"", status=301, headers={"Location": "/feed.xml"})
    feed_server.put("/feed.xml", body)
    feed_server.put("/rss.xml", body)  # the same feed under another name
    feed_server.put("/atom.xml", ATOM, content_type="application/atom+xml")
    feed_server.put("/index.xml", "<html>not a feed</html>", content_type=HTML)
    found = await find(feed_server.url("/about"))
    assert found == [
        FoundFeed(feed_server.url("/feed.xml"), "rss", "Guessed", "guess"),
        FoundFeed(feed_server.url("/atom.xml"), "atom", "Atom of the team", "guess"),
    ]
    for path in COMMON_PATHS:  # /feed.xml once more, as /feed's redirect
        assert feed_server.hits(path) == (2 if path == "/feed.xml" else 1), path


async def test_nothing_found_is_an_empty_list_and_a_dead_page_an_error(
    feed_server: FeedServer,
) -> None:
    feed_server.put("/plain", "just text", content_type="text/plain")
    assert await find(feed_server.url("/plain")) == []
    with pytest.raises(FetchError, match=r"HTTP 404\b.* from http://127\.0\.0\.1:\d+/missing"):
        await find(feed_server.url("/missing"))


async def test_link_local_addresses_are_refused_before_connecting() -> None:
    with pytest.raises(FetchError, match=r"169\.254\.169\.254 is a cloud-metadata address"):
        await find("http://169.254.169.254/latest/")


class GatedFetcher:
    """Answers every probe with 404, holding each until PROBES_AT_ONCE are in
    flight and every other probe task has had its turn to start (call_soon
    runs after the tasks already queued): without a bound, all would be in."""

    def __init__(self) -> None:
        self.in_flight = self.most = 0
        self.full = asyncio.Event()

    async def get(self, url: str, **_kw: object) -> FetchResult:
        if url.endswith("/page"):
            return FetchResult(url, b"<html></html>", "text/html", None, None)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= PROBES_AT_ONCE:
            asyncio.get_running_loop().call_soon(self.full.set)
        await self.full.wait()
        self.in_flight -= 1
        raise FetchError(f"HTTP 404 from {url}")


async def test_probes_run_concurrently_but_bounded() -> None:
    gated = GatedFetcher()
    assert await discover(gated, "http://intranet.example/page") == []  # type: ignore[arg-type]
    assert gated.most == PROBES_AT_ONCE < len(COMMON_PATHS)


def test_the_command_prints_one_feed_per_line(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_server.put("/team/", PAGE.format(other="https://feeds.example.net"), content_type=HTML)
    assert main(["discover", feed_server.url("/team/")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 2) for line in lines] == [
        [feed_server.url("/blog/feed.xml"), "rss", "Posts (RSS)"],
        [feed_server.url("/atom.xml"), "atom", "The team blog"],
        ["https://feeds.example.net/feed.json", "json", "Posts (JSON)"],
    ]

    # The [http] settings of a config file apply when one is named: here, its User-Agent.
    config = tmp_path / "config.toml"
    config.write_text('[http]\nuser_agent = "Discovery test"\n')
    feed_server.put("/plain", "just text", content_type="text/plain")
    assert main(["discover", feed_server.url("/plain"), "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no feed found for {feed_server.url('/plain')}" in err and "/feed.json" in err
    agents = {h.get("User-Agent") for p, h in feed_server.requests if p in ("/plain", "/feed")}
    assert agents == {"Discovery test"}

    assert main(["discover", feed_server.url("/gone")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: HTTP 404") and feed_server.url("/gone") in err


def test_only_the_head_is_parsed_for_links_and_a_hostile_one_not_at_all() -> None:
    head = (
        b"<html><head><title>News</title>"
        b'<link rel="alternate" type="application/rss+xml" href="/f.xml">'
    )
    deep_body = b"</head><body>" + b"<div>" * 300_000 + b"</body></html>"
    started = time.perf_counter()
    [found] = feed_links(head + deep_body, "https://intranet.example/news/")
    assert found.url == "https://intranet.example/f.xml" and found.title == "News"
    assert feed_links(b"<html><head>" + b"<span>" * 5_000 + b"</head>", "https://e.org/") == []
    assert time.perf_counter() - started < 2
