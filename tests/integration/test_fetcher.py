"""The shared fetcher against a real loopback HTTP server."""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import brotli
import pytest

import connectors.http
from aggregator import PROJECT_URL, __version__
from aggregator.connector import HttpSettings
from aggregator.exceptions import FetchError, GoneError
from connectors.http import Fetcher, freshness_seconds
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


async def test_brotli_and_deflate_are_decoded_and_capped(feed_server: FeedServer) -> None:
    body = b"<rss>" + b"b" * 1000 + b"</rss>"
    feed_server.put("/br", brotli.compress(body), headers={"Content-Encoding": "br"})
    feed_server.put("/deflate", zlib.compress(body), headers={"Content-Encoding": "deflate"})
    # Brotli packs 1 GB of zeros into under a kilobyte; decoding stops at the cap.
    bomb = brotli.compress(b"\0" * 1_000_000_000, quality=5)
    assert len(bomb) < 100_000
    feed_server.put("/bomb", bomb, headers={"Content-Encoding": "br"})
    async with Fetcher.open(SETTINGS) as fetcher:
        assert (await fetcher.get(feed_server.url("/br"))).content == body
        assert (await fetcher.get(feed_server.url("/deflate"))).content == body
        with pytest.raises(FetchError, match="larger than 50000 bytes"):
            await fetcher.get(feed_server.url("/bomb"))
    accepted = feed_server.requests[0][1]["Accept-Encoding"]
    assert {"gzip", "deflate", "br"} <= {a.strip() for a in accepted.split(",")}


async def test_a_dripped_body_ends_at_the_total_deadline(feed_server: FeedServer) -> None:
    # One byte every 0.2 s never trips the 1 s read timeout: only the total deadline ends it.
    feed_server.put("/drip", b"<rss>" + b"x" * 200 + b"</rss>", drip=0.2)
    settings = HttpSettings(connect_timeout=1, read_timeout=1, total_timeout=1.5)
    feed_server.put("/ok", b"<rss/>")
    async with Fetcher.open(settings) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"no complete response within 1\.5s"):
            await fetcher.get(feed_server.url("/drip"))
        assert 1.4 < time.monotonic() - started < 3
        # The same host still answers, and the deadline is per fetch, not per fetcher.
        assert (await fetcher.get(feed_server.url("/ok"))).content == b"<rss/>"


async def test_gone_is_its_own_error(feed_server: FeedServer) -> None:
    feed_server.put("/gone", b"removed", status=410)
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(GoneError, match=r"HTTP 410 Gone from http://127\.0\.0\.1"):
            await fetcher.get(feed_server.url("/gone"))


async def test_user_agent_names_tidings_its_version_and_url(feed_server: FeedServer) -> None:
    feed_server.put("/f", b"<rss/>")
    async with Fetcher.open(HttpSettings()) as fetcher:
        await fetcher.get(feed_server.url("/f"))
    agent = feed_server.requests[-1][1]["User-Agent"]
    assert agent == f"Tidings/{__version__} (+{PROJECT_URL})"


async def test_expires_is_a_hint(feed_server: FeedServer) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    feed_server.put(
        "/expires", b"<rss/>", headers={"Expires": format_datetime(expires, usegmt=True)}
    )
    feed_server.put("/expired", b"<rss/>", headers={"Expires": "0"})
    feed_server.put(
        "/both", b"<rss/>",
        headers={"Cache-Control": "public, max-age=60", "Expires": "Thu, 01 Jan 2099 00:00:00 GMT"},
    )  # fmt: skip
    async with Fetcher.open(SETTINGS) as fetcher:
        fresh = (await fetcher.get(feed_server.url("/expires"))).max_age
        assert fresh is not None and 590 <= fresh <= 600
        assert (await fetcher.get(feed_server.url("/expired"))).max_age is None
        assert (await fetcher.get(feed_server.url("/both"))).max_age == 60  # max-age wins


def test_expires_counts_from_the_servers_date() -> None:
    # The server's clock is a day behind ours: Expires counts from its Date.
    date = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(date, usegmt=True),
        "Expires": format_datetime(date + timedelta(minutes=10), usegmt=True),
    }
    assert freshness_seconds(headers, date + timedelta(days=1)) == 600
    assert freshness_seconds({"Cache-Control": 'max-age="30"'}, date) == 30
    assert freshness_seconds({"Expires": "not a date"}, date) is None


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


# Link-local and cloud-metadata addresses. No test here ever reaches one:
# `loopback_only` fails any connection to anything but 127.0.0.1.


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hosts httpcore2 connected to; a connection anywhere but 127.0.0.1 fails."""
    seen: list[str] = []
    real = anyio.connect_tcp

    async def loopback_only(remote_host: Any, remote_port: int, **kw: Any) -> Any:
        seen.append(str(remote_host))
        if str(remote_host) not in ("127.0.0.1", "meta.test"):
            raise OSError(f"test tried to connect to {remote_host}")
        return await real(remote_host, remote_port, **kw)

    monkeypatch.setattr(anyio, "connect_tcp", loopback_only)
    return seen


def resolve_to(monkeypatch: pytest.MonkeyPatch, *, check: list[str], connect: str) -> None:
    """`meta.test` resolves to `check` for the fetcher's address check and to
    `connect` when httpcore2 connects (through socket.getaddrinfo)."""

    async def fake_resolve(host: str) -> list[str]:
        assert host == "meta.test"
        return check

    real = socket.getaddrinfo

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host in ("meta.test", b"meta.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (connect, port or 0))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(connectors.http, "resolve", fake_resolve)
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)


@pytest.mark.parametrize(
    ("url", "host", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud-metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254", "cloud-metadata"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", "cloud-metadata"),
        ("https://169.254.10.1:8443/", "169.254.10.1", "link-local"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
    ],
)
async def test_link_local_and_metadata_addresses_are_refused_before_connecting(
    url: str, host: str, kind: str, connections: list[str]
) -> None:
    start = time.monotonic()
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError) as err:
            await fetcher.get(url)
    assert time.monotonic() - start < 1  # no connect timeout waited out
    assert connections == []  # no network traffic at all
    message = str(err.value)
    assert f"{host} is a {kind} address" in message
    assert "allow_link_local = true" in message


async def test_a_name_is_refused_when_any_of_its_addresses_is(
    monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    # The real resolver (getaddrinfo, which this fakes) and the any-address rule.
    def two_addresses(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        assert host == "meta.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    url = "http://user:s3cret@meta.test/latest/meta-data?token=t0ken"
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError) as err:
            await fetcher.get(url)
    message = str(err.value)
    assert "meta.test resolves to 169.254.169.254, a cloud-metadata address" in message
    assert "s3cret" not in message and "t0ken" not in message and "user" not in message
    assert connections == []


async def test_a_redirect_to_the_metadata_address_is_refused_at_that_hop(
    feed_server: FeedServer, connections: list[str]
) -> None:
    target = "http://169.254.169.254/latest/meta-data"
    feed_server.put("/r?token=t0ken", b"", status=302, headers={"Location": target})
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError) as err:
            await fetcher.get(feed_server.url("/r?token=t0ken"))
    message = str(err.value)
    origin = feed_server.url("/r") + "?…"  # redacted: no query string
    assert message.startswith(f"refused to fetch {target} (redirected from {origin})")
    assert "169.254.169.254 is a cloud-metadata address" in message
    assert "allow_link_local = true" in message and "t0ken" not in message
    assert feed_server.hits("/r?token=t0ken") == 1
    assert connections == ["127.0.0.1"]  # the loopback server only


async def test_a_redirect_to_a_name_resolving_to_link_local_is_refused(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    resolve_to(monkeypatch, check=["169.254.1.1"], connect="127.0.0.1")
    feed_server.put("/r", b"", status=301, headers={"Location": "http://meta.test/feed"})
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError, match=r"meta\.test resolves to 169\.254\.1\.1, a link"):
            await fetcher.get(feed_server.url("/r"))
    assert connections == ["127.0.0.1"]


async def test_allow_link_local_skips_the_check_at_every_hop(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    # The check would see the metadata address; the connection goes to loopback.
    resolve_to(monkeypatch, check=["169.254.169.254"], connect="127.0.0.1")
    feed_server.put("/feed", b"<rss/>")
    meta = f"http://meta.test:{feed_server.port}"
    feed_server.put("/r", b"", status=302, headers={"Location": f"{meta}/feed"})
    async with Fetcher.open(SETTINGS) as fetcher:
        with pytest.raises(FetchError, match=r"meta\.test resolves to 169\.254\.169\.254"):
            await fetcher.get(f"{meta}/feed")
        assert feed_server.hits("/feed") == 0 and connections == []

        direct = await fetcher.get(f"{meta}/feed", allow_link_local=True)
        redirected = await fetcher.get(feed_server.url("/r"), allow_link_local=True)
    assert direct.content == redirected.content == b"<rss/>"
    assert redirected.url == f"{meta}/feed"
    assert feed_server.hits("/feed") == 2
    assert set(connections) <= {"127.0.0.1", "meta.test"}


async def test_loopback_names_are_allowed(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    resolve_to(monkeypatch, check=["127.0.0.1", "::1"], connect="127.0.0.1")
    feed_server.put("/feed", b"<rss/>")
    async with Fetcher.open(SETTINGS) as fetcher:
        got = await fetcher.get(f"http://meta.test:{feed_server.port}/feed")
    assert got.content == b"<rss/>"


async def test_the_address_check_looks_a_name_up_once_a_minute(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    async def counting(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    real = socket.getaddrinfo

    def to_loopback(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        return real(
            "127.0.0.1" if host in ("feeds.test", b"feeds.test") else host, port, *args, **kw
        )

    monkeypatch.setattr(connectors.http, "resolve", counting)
    monkeypatch.setattr(socket, "getaddrinfo", to_loopback)
    feed_server.put("/a", b"<rss/>")
    url = f"http://feeds.test:{feed_server.port}/a"
    async with Fetcher.open(SETTINGS) as fetcher:
        for _ in range(3):
            assert (await fetcher.get(url)).content == b"<rss/>"
        assert lookups == ["feeds.test"]
    monkeypatch.setattr(connectors.http, "_RESOLVED_TTL", 0.0)  # every answer stale at once
    async with Fetcher.open(SETTINGS) as fetcher:
        for _ in range(2):
            await fetcher.get(url)
    assert lookups == ["feeds.test"] * 3
