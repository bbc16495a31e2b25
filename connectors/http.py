"""The shared fetcher: one pooled httpx2 client for every HTTP source.

Conditional GET (ETag / Last-Modified), gzip, connect and read timeouts, a cap
on the *decoded* body (a small gzip bomb cannot fill memory), redirects with
permanent ones reported, Retry-After and Cache-Control max-age surfaced as
hints, and a per-host concurrency limit so one slow intranet host cannot take
every slot.

Credentials (basic or bearer) go per request, never into the URL. httpx2 drops
the Authorization header when a redirect leaves the origin (another host or
port, or https -> http); the only exception is an http -> https upgrade of the
same host on default ports. tests/integration/test_feed_auth.py pins that.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx2

from aggregator.connector import HttpSettings, PollContext
from aggregator.exceptions import FetchError

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
PERMANENT = {301, 308}


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


def redact(url: str) -> str:
    """A URL fit for error messages, logs and the admin UI: no userinfo, no
    query string (intranet feeds often carry tokens in either)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


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
            )
            host = self._hosts[key] = (asyncio.Semaphore(per_host), client)
        return host

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Credentials | None = None,
    ) -> FetchResult:
        """GET `url`. `auth` is sent to the URL's origin only, never after a
        redirect to another one."""
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
        async with slot:
            try:
                async with client.stream(
                    "GET", target, headers=request_headers, auth=_auth(auth)
                ) as resp:
                    return await self._read(url, resp)
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
        if resp.status_code >= 400:
            retry = retry_after_seconds(resp.headers.get("Retry-After"), datetime.now(UTC))
            raise FetchError(f"HTTP {resp.status_code} from {redact(url)}", retry_after=retry)
        match = _MAX_AGE.search(resp.headers.get("Cache-Control", ""))
        head = FetchResult(
            url=str(resp.url),
            content=b"",
            content_type=resp.headers.get("Content-Type", ""),
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
            not_modified=resp.status_code == 304,
            permanent_redirect=moved,
            max_age=float(match.group(1)) if match else None,
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
