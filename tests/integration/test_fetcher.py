"""The shared fetcher against a real loopback HTTP server."""

from __future__ import annotations

import gzip

import pytest

from aggregator.connector import HttpSettings
from aggregator.exceptions import FetchError
from connectors.http import Fetcher
from tests.support import FeedServer, free_port

pytestmark = pytest.mark.integration

SETTINGS = HttpSettings(connect_timeout=2, read_timeout=2, max_body_bytes=50_000, per_host=2)


async def test_gzip_is_decoded_and_the_cap_applies_after_decoding(feed_server: FeedServer) -> None:
    small = b"<rss>" + b"a" * 1000 + b"</rss>"
    feed_server.put("/small", gzip.compress(small), headers={"Content-Encoding": "gzip"})
    # 2 MB of zeros is a ~2 KB download: the decoded size is what must be capped.
    bomb = gzip.compress(b"\0" * 2_000_000)
    assert len(bomb) < SETTINGS.max_body_bytes
    feed_server.put("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    async with Fetcher.open(SETTINGS) as fetcher:
        got = await fetcher.get(feed_server.url("/small"))
        assert got.content == small
        with pytest.raises(FetchError, match="larger than 50000 bytes"):
            await fetcher.get(feed_server.url("/bomb"))
    accept = dict(feed_server.requests[0][1])
    assert "gzip" in accept.get("Accept-Encoding", "")


async def test_conditional_get_and_hints(feed_server: FeedServer) -> None:
    feed_server.put(
        "/f", b"<rss/>", etag='"e1"',
        headers={"Last-Modified": "Wed, 25 Nov 2026 10:00:00 GMT", "Cache-Control": "max-age=900"},
    )  # fmt: skip
    async with Fetcher.open(SETTINGS) as fetcher:
        first = await fetcher.get(feed_server.url("/f"))
        assert first.etag == '"e1"' and first.max_age == 900
        second = await fetcher.get(feed_server.url("/f"), etag=first.etag)
        assert second.not_modified and second.content == b""
    headers = feed_server.requests[-1][1]
    assert headers["If-None-Match"] == '"e1"'


async def test_permanent_redirects_are_reported_temporary_ones_not(feed_server: FeedServer) -> None:
    feed_server.put("/new", b"<rss/>")
    feed_server.put("/old", b"", status=301, headers={"Location": feed_server.url("/new")})
    feed_server.put("/tmp", b"", status=302, headers={"Location": feed_server.url("/new")})
    async with Fetcher.open(SETTINGS) as fetcher:
        moved = await fetcher.get(feed_server.url("/old"))
        assert moved.permanent_redirect == feed_server.url("/new")
        assert moved.content == b"<rss/>"
        temporary = await fetcher.get(feed_server.url("/tmp"))
        assert temporary.permanent_redirect is None


async def test_retry_after_is_surfaced(feed_server: FeedServer) -> None:
    feed_server.put("/busy", b"slow down", status=429, headers={"Retry-After": "120"})
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError, match="HTTP 429") as err:
            await fetcher.get(feed_server.url("/busy"))
    assert err.value.retry_after == 120


async def test_connection_refused_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/feed"
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError, match=r"cannot fetch http://127\.0\.0\.1"):
            await fetcher.get(url)


async def test_errors_never_show_credentials_or_query_tokens(feed_server: FeedServer) -> None:
    feed_server.put("/private?private_token=t0ken", b"no", status=403)
    port = feed_server.port
    url = f"http://user:s3cret@127.0.0.1:{port}/private?private_token=t0ken"
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError) as err:
            await fetcher.get(url)
    message = str(err.value)
    assert "HTTP 403" in message and f"127.0.0.1:{port}/private" in message
    assert "s3cret" not in message and "t0ken" not in message and "user" not in message
