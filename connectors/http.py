"""The shared fetcher: one pooled httpx2 client for every HTTP source.

Conditional GET (ETag / Last-Modified); gzip, deflate and brotli (httpx2
decodes in bounded chunks, so a small bomb cannot fill memory, and the cap on
the *decoded* body stops it); connect, read and *total* deadlines (a body
dripped a byte at a time never trips the read timeout, so the whole fetch has
one); redirects with permanent ones reported; Retry-After, Cache-Control
max-age and Expires surfaced as hints; 410 Gone raised as GoneError; and a
per-host concurrency limit so one slow intranet host cannot take every slot.

Credentials (basic or bearer) go per request, never into the URL. httpx2 drops
the Authorization header when a redirect leaves the origin (another host or
port, or https -> http); the only exception is an http -> https upgrade of the
same host on default ports. tests/integration/test_feed_auth.py pins that.

Intranets are the point, so loopback and private addresses are allowed (only
admins create sources). Link-local and cloud-metadata addresses are not: a
request whose host is, or resolves to, an address in 169.254.0.0/16 or
fe80::/10, or fd00:ec2::254 (IPv4-mapped and NAT64 forms included), is refused
before connecting, at the first request and at every redirect hop, unless the
caller passes `allow_link_local=True` (the feed option of that name, for
config-file sources only). tests/integration/test_fetcher.py pins that.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx2

from aggregator.connector import HttpSettings, PollContext
from aggregator.exceptions import FetchError, GoneError
from aggregator.urls import redact as redact  # re-exported: connectors.feed imports it here

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
PERMANENT = {301, 308}

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: IPv4 embedded in the low bits
_RESOLVED_TTL = 60.0  # seconds an address check's lookup is reused
_RESOLVED_MAX = 10_000
_GUARD = "tidings.address_guard"  # request extension; httpx2 carries it to every redirect hop
ALLOW_HINT = (
    "link-local and cloud-metadata addresses are refused unless the source sets "
    "allow_link_local = true (config-file sources only)"
)


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str
    content: bytes
    content_type: str
    etag: str | None
    last_modified: str | None
    not_modified: bool = False
    permanent_redirect: str | None = None
    max_age: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # the final response's


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP basic auth; the password stays out of repr (and so out of logs)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """`Authorization: Bearer <token>`; the token stays out of repr."""

    token: str = field(repr=False)


Credentials = BasicAuth | BearerAuth


class _Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self._value
        yield request


def _auth(credentials: Credentials | None) -> httpx2.Auth | None:
    if isinstance(credentials, BasicAuth):
        return httpx2.BasicAuth(credentials.username, credentials.password)
    if isinstance(credentials, BearerAuth):
        return _Bearer(credentials.token)
    return None


def refused_address(address: str) -> str | None:
    """Why the fetcher refuses the IP literal `address` by default:
    "cloud-metadata", "link-local", or None when it is allowed (loopback,
    private and public addresses are). An IPv4-mapped (::ffff:a.b.c.d) or NAT64
    (64:ff9b::a.b.c.d) IPv6 address counts as the IPv4 address it carries, and
    a zone (fe80::1%eth0) is ignored. Raises ValueError when not an IP address."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _METADATA:
        return "cloud-metadata"
    if any(ip in net for net in _LINK_LOCAL):
        return "link-local"
    return None


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


async def resolve(host: str) -> list[str]:
    """Every address `host` resolves to, through the event loop's getaddrinfo
    (which runs in the loop's executor, off the loop). Also what turns the
    inet_aton spellings of an IPv4 address ("2852039166", "0xa9fea9fe") into
    the address they mean."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class _Guard:
    """Per-request settings of the address check (a request extension)."""

    allow_link_local: bool
    start: httpx2.URL  # the URL asked for, to tell a redirect hop from it


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def freshness_seconds(headers: Mapping[str, str], now: datetime) -> float | None:
    """How long the response says it stays fresh: Cache-Control max-age, else
    Expires minus the server's Date (its clock, not ours), else minus now. An
    unparsable Expires means "already expired" (RFC 9111): no hint."""
    match = _MAX_AGE.search(headers.get("Cache-Control", ""))
    if match:
        return float(match.group(1))
    expires = _http_date(headers.get("Expires"))
    if expires is None:
        return None
    seconds = (expires - (_http_date(headers.get("Date")) or now)).total_seconds()
    return seconds if seconds > 0 else None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    return None if when is None else max(0.0, (when - now).total_seconds())


class Fetcher:
    """One small connection pool per host, sharing one TLS context.

    httpcore checks every pooled connection on every request, so one big pool
    for all hosts costs O(connections) per request; a pool per host stays as
    small as the per-host limit. The semaphore makes the limit exact.
    """

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._tls = httpx2.create_ssl_context()  # loading the CA bundle is slow: once
        self._timeout = httpx2.Timeout(
            settings.read_timeout, connect=settings.connect_timeout, pool=settings.read_timeout
        )
        self._hosts: dict[str, tuple[asyncio.Semaphore, httpx2.AsyncClient]] = {}
        # The address check's answers, briefly: 10,000 feeds on a few hosts
        # would otherwise cost 10,000 lookups a round.
        self._resolved: dict[str, tuple[float, list[str]]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: HttpSettings) -> AsyncIterator[Fetcher]:
        fetcher = cls(settings)
        try:
            yield fetcher
        finally:
            await fetcher.aclose()

    async def aclose(self) -> None:
        clients = [client for _, client in self._hosts.values()]
        self._hosts.clear()
        for client in clients:
            await client.aclose()

    def _host(self, url: httpx2.URL) -> tuple[asyncio.Semaphore, httpx2.AsyncClient]:
        key = f"{url.scheme}://{url.host}:{url.port}"
        host = self._hosts.get(key)
        if host is None:
            per_host = self._settings.per_host
            client = httpx2.AsyncClient(
                verify=self._tls,
                timeout=self._timeout,
                limits=httpx2.Limits(max_connections=per_host, max_keepalive_connections=per_host),
                follow_redirects=True,
                max_redirects=5,
                trust_env=False,
                headers={"User-Agent": self._settings.user_agent},
                # Runs before every request httpx2 sends, redirect hops included.
                event_hooks={"request": [self._check_address]},
            )
            host = self._hosts[key] = (asyncio.Semaphore(per_host), client)
        return host

    async def _check_address(self, request: httpx2.Request) -> None:
        """Refuse a request whose host is, or resolves to, a link-local or
        cloud-metadata address, before any connection is made.

        A name's addresses are looked up once a minute at most (_RESOLVED_TTL).
        Known limit (DNS rebinding): the name is resolved here and again by
        httpcore2 when it connects, so a name whose answer changes in between
        can still reach a refused address. Closing that gap needs connecting
        to the checked address itself (a custom network backend)."""
        guard = request.extensions.get(_GUARD)
        if isinstance(guard, _Guard) and guard.allow_link_local:
            return
        url = request.url
        host = url.host  # for messages: the name as written (Unicode)
        name = url.raw_host.decode("ascii")  # IDNA-encoded, what getaddrinfo wants
        literal = _ip_literal(name)
        if literal:
            addresses = [name]
        elif (cached := self._resolved.get(name)) and cached[0] > time.monotonic():
            addresses = cached[1]
        else:
            try:
                addresses = await asyncio.wait_for(resolve(name), self._settings.connect_timeout)
            except TimeoutError:
                raise FetchError(
                    f"timed out fetching {redact(str(url))} (resolving {host})"
                ) from None
            except (OSError, UnicodeError) as err:
                reason = getattr(err, "strerror", None) or type(err).__name__
                raise FetchError(
                    f"cannot fetch {redact(str(url))}: cannot resolve {host}: {reason}"
                ) from None
            if len(self._resolved) >= _RESOLVED_MAX:
                self._resolved.clear()
            self._resolved[name] = (time.monotonic() + _RESOLVED_TTL, addresses)
        # Any refused address refuses the host: the connection may use any of them.
        for address in addresses:
            kind = refused_address(address)
            if kind is None:
                continue
            what = f"{host} is" if literal else f"{host} resolves to {address},"
            hop = ""
            if isinstance(guard, _Guard) and url != guard.start:
                hop = f" (redirected from {redact(str(guard.start))})"
            raise FetchError(
                f"refused to fetch {redact(str(url))}{hop}: {what} a {kind} address; {ALLOW_HINT}"
            )

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Credentials | None = None,
        allow_link_local: bool = False,
    ) -> FetchResult:
        """GET `url`. `auth` is sent to the URL's origin only, never after a
        redirect to another one. Link-local and cloud-metadata hosts are
        refused, at every hop, unless `allow_link_local`."""
        return await self.request(
            "GET",
            url,
            etag=etag,
            last_modified=last_modified,
            headers=headers,
            auth=auth,
            allow_link_local=allow_link_local,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Credentials | None = None,
        allow_link_local: bool = False,
    ) -> FetchResult:
        """`method` `url` (with query `params` added, and a `json` body when
        not None), under the rules of `get`."""
        request_headers = dict(headers or {})
        if etag:
            request_headers["If-None-Match"] = etag
        if last_modified:
            request_headers["If-Modified-Since"] = last_modified
        try:
            target = httpx2.URL(url)
        except httpx2.InvalidURL as err:
            raise FetchError(f"invalid URL {redact(url)!r}: {err}") from None
        slot, client = self._host(target)
        total = self._settings.total_timeout
        async with slot:  # waiting for a slot is not the fetch's time
            deadline = asyncio.timeout(total)
            try:
                async with (
                    deadline,
                    client.stream(
                        method,
                        target,
                        params=params,
                        json=json,
                        headers=request_headers,
                        auth=_auth(auth),
                        extensions={_GUARD: _Guard(allow_link_local, target)},
                    ) as resp,
                ):
                    return await self._read(url, resp)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise FetchError(
                    f"timed out fetching {redact(url)}: no complete response within {total:g}s"
                ) from None
            except httpx2.TimeoutException as err:
                raise FetchError(
                    f"timed out fetching {redact(url)} ({type(err).__name__})"
                ) from err
            except httpx2.TooManyRedirects as err:
                raise FetchError(f"too many redirects fetching {redact(url)}") from err
            except httpx2.HTTPError as err:
                raise FetchError(
                    f"cannot fetch {redact(url)}: {err or type(err).__name__}"
                ) from err

    async def _read(self, url: str, resp: httpx2.Response) -> FetchResult:
        moved = None
        if resp.history and all(r.status_code in PERMANENT for r in resp.history):
            moved = str(resp.url)
        now = datetime.now(UTC)
        if resp.status_code == 410:
            raise GoneError(f"HTTP 410 Gone from {redact(url)}: the feed was removed")
        if resp.status_code >= 400:
            retry = retry_after_seconds(resp.headers.get("Retry-After"), now)
            reason = f" {resp.reason_phrase}" if resp.reason_phrase else ""
            raise FetchError(
                f"HTTP {resp.status_code}{reason} from {redact(url)}", retry_after=retry
            )
        head = FetchResult(
            url=str(resp.url),
            content=b"",
            content_type=resp.headers.get("Content-Type", ""),
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
            not_modified=resp.status_code == 304,
            permanent_redirect=moved,
            max_age=freshness_seconds(resp.headers, now),
            headers=resp.headers,
        )
        if head.not_modified:
            await resp.aread()  # an unread (empty) body would cost the keep-alive connection
            return head
        cap = self._settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():  # decoded: the cap applies after gunzip
            size += len(chunk)
            if size > cap:
                raise FetchError(f"response from {redact(url)} is larger than {cap} bytes")
            chunks.append(chunk)
        return replace(head, content=b"".join(chunks))


async def fetcher(ctx: PollContext) -> Fetcher:
    """The poller-wide fetcher, opened on first use."""
    return await ctx.resources.get("http", lambda: Fetcher.open(ctx.http))
