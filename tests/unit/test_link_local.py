"""Link-local and cloud-metadata addresses: which ones the fetcher refuses, and
the feed option that lets a config-file source reach them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from aggregator.connector import PollContext, Resources
from aggregator.exceptions import FetchError
from connectors.feed import FeedConnector, FeedOptions
from connectors.http import FetchResult, refused_address, resolve


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "cloud-metadata"),  # AWS, GCP, Azure, OCI, OpenStack
        ("fd00:ec2::254", "cloud-metadata"),  # AWS over IPv6
        ("FD00:EC2:0:0:0:0:0:254", "cloud-metadata"),
        ("::ffff:169.254.169.254", "cloud-metadata"),  # IPv4-mapped
        ("::ffff:a9fe:a9fe", "cloud-metadata"),  # the same, in hex
        ("64:ff9b::a9fe:a9fe", "cloud-metadata"),  # NAT64 well-known prefix
        ("169.254.0.1", "link-local"),
        ("169.254.255.255", "link-local"),
        ("169.254.170.2", "link-local"),  # ECS task metadata
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),  # with a zone
        ("febf:ffff::1", "link-local"),  # still fe80::/10
        ("::ffff:169.254.1.1", "link-local"),
    ],
)
def test_refused_addresses(address: str, kind: str) -> None:
    assert refused_address(address) == kind


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback: the tests' own servers, sidecars
        "127.255.255.254",
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",  # private: intranets are the point
        "172.16.0.1",
        "192.168.1.10",
        "fd00::1",  # unique local, but not the metadata address
        "fd00:ec2::253",
        "fec0::1",  # just past fe80::/10
        "169.253.255.255",  # just outside 169.254.0.0/16
        "169.255.0.0",
        "93.184.216.34",
        "2606:2800:220:1::1",
        "0.0.0.0",
    ],
)
def test_allowed_addresses(address: str) -> None:
    assert refused_address(address) is None


def test_only_ip_addresses_are_classified() -> None:
    with pytest.raises(ValueError):
        refused_address("metadata.google.internal")


@pytest.mark.parametrize("spelling", ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376"])
async def test_resolving_turns_other_ipv4_spellings_into_the_address(spelling: str) -> None:
    # getaddrinfo parses these numeric forms itself (no DNS query); they are
    # not IP literals to `ipaddress`, so the fetcher resolves them and sees
    # the metadata address they mean.
    with pytest.raises(ValueError):
        refused_address(spelling)
    addresses = await resolve(spelling)
    assert addresses and all(refused_address(a) == "cloud-metadata" for a in addresses)


def test_the_option_is_off_by_default_and_a_bool() -> None:
    assert FeedOptions(url="http://intranet/feed").allow_link_local is False
    opts = FeedOptions.model_validate({"url": "http://meta.internal/", "allow_link_local": True})
    assert opts.allow_link_local is True
    with pytest.raises(ValidationError, match="allow_link_local"):
        FeedOptions.model_validate({"url": "http://x/", "allow_link_local": "sometimes"})


def test_the_option_is_for_http_urls_only() -> None:
    with pytest.raises(ValidationError, match="only for http"):
        FeedOptions.model_validate({"url": "file:///srv/feed.xml", "allow_link_local": True})
    assert FeedOptions(url="feeds/a.xml", allow_link_local=False).allow_link_local is False


class FakeFetcher:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def get(self, url: str, **kw: Any) -> FetchResult:
        self.calls.append({"url": url, **kw})
        return FetchResult(url, b"", "", None, None, not_modified=True)


async def poll_context(fake: FakeFetcher, *, web_made: bool) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    @asynccontextmanager
    async def opened() -> AsyncIterator[FakeFetcher]:
        yield fake

    resources = Resources()
    await resources.get("http", opened)  # what connectors.http.fetcher(ctx) will return
    return PollContext(
        source_id="s", now=datetime.now(UTC), resources=resources, run_cpu=run_cpu,
        web_made=web_made,
    )  # fmt: skip


async def test_config_file_sources_pass_the_option_to_the_fetcher() -> None:
    fake = FakeFetcher()
    for allow in (False, True):
        connector = FeedConnector(FeedOptions(url="http://meta.internal/", allow_link_local=allow))
        await connector.poll(None, await poll_context(fake, web_made=False))
    assert [c["allow_link_local"] for c in fake.calls] == [False, True]


async def test_web_made_sources_may_not_use_the_option() -> None:
    fake = FakeFetcher()
    connector = FeedConnector(FeedOptions(url="http://meta.internal/", allow_link_local=True))
    with pytest.raises(FetchError, match="sources made in the web admin may not reach link-local"):
        await connector.poll(None, await poll_context(fake, web_made=True))
    assert fake.calls == []  # refused before any request
    # Without the option a web-made source polls as usual (the fetcher refuses
    # link-local hosts for it like for any other source).
    plain = FeedConnector(FeedOptions(url="http://intranet/feed"))
    await plain.poll(None, await poll_context(fake, web_made=True))
    assert fake.calls[0]["allow_link_local"] is False
