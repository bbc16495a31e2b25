"""The shared fetcher: one pooled httpx2 client for every HTTP source.

Conditional GET (ETag / Last-Modified); gzip, deflate and brotli (httpx2
decodes in bounded chunks, so a small bomb cannot fill memory, and the cap on
the *decoded* body stops it); connect, read and *total* deadlines (a body
dripped a byte at a time never trips the read timeout, so the whole fetch has
one); redirects with permanent ones reported; Retry-After, Cache-Control
max-age and Expires surfaced as hints; 410 Gone raised as GoneError; and a
per-host concurrency limit so one slow intranet host cannot take every slot.

Credentials (basic, bearer, NTLM or Negotiate) go per request, never into the
URL. httpx2 drops the Authorization header when a redirect leaves the origin
(another host or port, or https -> http); the only exception is an http ->
https upgrade of the same host on default ports; the NTLM and Negotiate
handshakes only ever answer a challenge from the URL's own origin.
tests/integration/test_feed_auth.py pins that.

NTLM authenticates the *connection*, not the request: the challenge must be
answered on the connection that received it, and servers (IIS) then treat the
connection as that user's. So each NTLM/Negotiate identity gets a pool of its
own with a single connection, used by one request at a time: no other
source's request can ride on an authenticated connection, and no concurrent
request can take the connection between challenge and answer (curl#682,
requests-ntlm#71). Over TLS the handshake carries a channel binding
(tls-server-end-point, RFC 5929), as Windows' Extended Protection expects.

A source's transport profile (its CA bundle, client certificate, proxy) also
gets clients of its own, so sources with different TLS or proxy settings never
share a connection; one SSL context per distinct profile, built off the event
loop and rebuilt when a certificate file changes on disk. Every host keeps one
concurrency limit whatever the profiles of the sources on it.
tests/integration/test_enterprise_http.py pins these.

Intranets are the point, so loopback and private addresses are allowed (only
admins create sources). Link-local and cloud-metadata addresses are not: a
request whose host is, or resolves to, an address in 169.254.0.0/16 or
fe80::/10, or fd00:ec2::254 (IPv4-mapped and NAT64 forms included), is refused
before connecting, at the first request and at every redirect hop, unless the
caller passes `allow_link_local=True` (the feed option of that name, for
config-file sources only). tests/integration/test_fetcher.py pins that.
Through a proxy the proxy's own address is checked the same way; the target's
name is checked when it resolves here, and left to the proxy when it does not
(behind a proxy, outside names often only resolve there).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import spnego
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import SpnegoError

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


@dataclass(frozen=True, slots=True)
class NtlmAuth:
    """NTLM (NTLMv2) through pyspnego. `username` is DOMAIN\\user or
    user@domain; the password stays out of repr."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NegotiateAuth:
    """SPNEGO ("Negotiate"): Kerberos when a ticket can be had, else NTLM.
    Without username and password, the process's own credentials are used:
    its Kerberos ticket cache (KRB5CCNAME), or pyspnego's NTLM_USER_FILE."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)


Credentials = BasicAuth | BearerAuth | NtlmAuth | NegotiateAuth


@dataclass(frozen=True, slots=True)
class TransportProfile:
    """How a source reaches its host: whom it trusts, which certificate it
    shows, which proxy it goes through. Requests with different profiles
    never share a connection.

    Paths are absolute. `files_version` is the (mtime_ns, size) of the files
    named, so a renewed certificate makes a new profile (and a new SSL
    context) without a restart. Passwords stay out of repr."""

    ca_bundle: Path | None = None  # replaces the default trust store
    client_cert: Path | None = None  # PEM, may hold the key too
    client_key: Path | None = None
    client_key_password: str | None = field(default=None, repr=False)
    proxy: str | None = None  # http(s)://host:port, without credentials
    proxy_username: str | None = None
    proxy_password: str | None = field(default=None, repr=False)
    files_version: tuple[tuple[int, int], ...] = ()

    def lineage(self) -> TransportProfile:
        """The profile without its file versions: what a renewed file replaces."""
        return replace(self, files_version=())


class _Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self._value
        yield request


_HEADER_ELEMENT = re.compile(r'(?:[^,"]|"(?:\\.|[^"\\])*")+')  # comma-separated, quotes kept
_MAX_ROUNDS = 4  # tokens a handshake may send: NTLM needs 2, Kerberos 1, SPNEGO 2


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _offered(response: httpx2.Response) -> dict[str, bytes | None]:
    """The schemes a 401 offers (lower-cased), each with its token if it came
    with one (`NTLM <base64>`); an unreadable token counts as none."""
    offers: dict[str, bytes | None] = {}
    elements = [
        element
        for value in response.headers.get_list("WWW-Authenticate")
        for element in _HEADER_ELEMENT.findall(value)
    ]
    for value in elements:
        scheme, _, rest = value.strip().partition(" ")
        token: bytes | None = None
        rest = rest.strip()
        if rest and "=" not in rest.rstrip("="):  # a token68, not auth-params (realm="x")
            with contextlib.suppress(binascii.Error, ValueError):
                token = base64.b64decode(rest, validate=True)
        if scheme and "=" not in scheme:  # not a parameter of the previous scheme
            offers.setdefault(scheme.lower(), token)
    return offers


def channel_bindings(response: httpx2.Response) -> GssChannelBindings | None:
    """RFC 5929 tls-server-end-point bindings of the TLS connection that
    carried `response` (None over plain HTTP): a hash of the server's
    certificate, with the certificate's own signature hash (SHA-256 for MD5,
    SHA-1 or none), so a relayed NTLM or Kerberos answer is refused by a
    server that checks it (Windows' Extended Protection)."""
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


class _Spnego(httpx2.Auth):
    """NTLM or Negotiate through pyspnego, the way requests-ntlm and
    requests-gssapi do it: send the request; on a 401 offering the scheme,
    answer with a token, read the challenge, answer again, on the same
    connection (see Fetcher: connection-authenticated pools hold one). The
    tokens are computed in a thread: Kerberos may talk to a KDC.

    Failures raise FetchError naming the host and user, never a password or
    a token (an NTLM answer is as good as a password hash to an attacker)."""

    def __init__(self, credentials: NtlmAuth | NegotiateAuth) -> None:
        self._credentials = credentials
        # Negotiate servers that only speak NTLM are answered with NTLM.
        self._schemes = ("NTLM",) if isinstance(credentials, NtlmAuth) else ("Negotiate", "NTLM")

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("NTLM and Negotiate run on the async client only")

    def _who(self) -> str:
        user = self._credentials.username
        return f" as {user}" if user else " with this process's own credentials"

    def _context(
        self, protocol: str, host: str, bindings: GssChannelBindings | None
    ) -> spnego.ContextProxy:
        return spnego.client(
            self._credentials.username,
            self._credentials.password,
            hostname=host,
            service="HTTP",
            channel_bindings=bindings,
            protocol=protocol,
        )

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        response = yield request
        if response.status_code != 401 or _origin(response.url) != _origin(request.url):
            return  # a challenge from another origin (after a redirect) gets nothing
        offers = _offered(response)
        scheme = next((s for s in self._schemes if s.lower() in offers), None)
        url = redact(str(response.url))
        if scheme is None:
            offered = ", ".join(sorted(offers)) or "no scheme"
            raise FetchError(
                f"HTTP 401 from {url}: the server does not offer {self._schemes[0]} "
                f"authentication (it offers {offered})"
            )
        host = response.url.host
        redirects = response.history  # httpx2 replaces it after this round; kept for _read
        target = response.request  # the URL that asked, after any same-origin redirect
        try:
            context = await asyncio.to_thread(
                self._context, scheme.lower(), host, channel_bindings(response)
            )
            token_in: bytes | None = None
            for _ in range(_MAX_ROUNDS):
                token_out = await asyncio.to_thread(context.step, token_in)
                if token_out is None:  # nothing more to send, yet no success
                    break
                target.headers["Authorization"] = f"{scheme} {base64.b64encode(token_out).decode()}"
                response = yield target
                token_in = _offered(response).get(scheme.lower())
                if response.status_code != 401:
                    if token_in and not context.complete:  # mutual authentication
                        await asyncio.to_thread(context.step, token_in)
                    response.history = [*redirects, *response.history]
                    return
                if token_in is None:
                    break  # a bare scheme again: the answer was refused
        except SpnegoError as err:
            raise FetchError(
                f"{scheme} authentication to {host}{self._who()} failed: {err}"
            ) from None
        raise FetchError(
            f"{scheme} authentication to {host}{self._who()} was refused (HTTP 401 from "
            f"{url}): wrong user name or password, or no access to this URL"
        )


def _auth(credentials: Credentials | None) -> httpx2.Auth | None:
    if isinstance(credentials, BasicAuth):
        return httpx2.BasicAuth(credentials.username, credentials.password)
    if isinstance(credentials, BearerAuth):
        return _Bearer(credentials.token)
    if isinstance(credentials, NtlmAuth | NegotiateAuth):
        return _Spnego(credentials)
    return None


_Identity = tuple[str, str, str]  # scheme, user name, password


def _connection_identity(credentials: Credentials | None) -> _Identity | None:
    """Whose a connection-authenticated request's connection is: the whole
    credential, so a source with a wrong password cannot ride on a connection
    another source authenticated as the same user."""
    if isinstance(credentials, NtlmAuth):
        return ("ntlm", credentials.username, credentials.password)
    if isinstance(credentials, NegotiateAuth):
        return ("negotiate", credentials.username or "", credentials.password or "")
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
    proxy: httpx2.URL | None = None  # what the connection is really made to


@dataclass(eq=False, slots=True)
class _Pool:
    """One client (connection pool). `lock` serialises a connection-
    authenticated identity's requests; a retired pool (its certificate file
    was replaced) is closed by the last request still using it."""

    client: httpx2.AsyncClient
    lock: asyncio.Lock | None = None
    users: int = 0
    retired: bool = False


_PoolKey = tuple[str, TransportProfile | None, _Identity | None]
_TlsKey = tuple[Path | None, Path | None, Path | None, str | None]


def _ssl_reason(err: ssl.SSLError | OSError) -> str:
    text = str(err.args[1] if len(err.args) > 1 else err)  # OpenSSL's words
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text).strip() or type(err).__name__


def _load_tls(
    ca_bundle: Path | None, cert: Path | None, key: Path | None, password: str | None
) -> ssl.SSLContext:
    """An SSL context trusting `ca_bundle` (else the default store) and
    showing `cert` (blocking: run it in a thread). Errors name the option."""
    try:
        context = (
            ssl.create_default_context(cafile=str(ca_bundle))
            if ca_bundle
            else httpx2.create_ssl_context()
        )
    except (OSError, ssl.SSLError) as err:
        raise FetchError(f"cannot use ca_bundle {ca_bundle}: {_ssl_reason(err)}") from None
    if cert is not None:
        try:
            # A password, even empty, always: with none OpenSSL would prompt on the terminal.
            context.load_cert_chain(cert, key, password=password or "")
        except (OSError, ssl.SSLError) as err:
            with_key = f" with client_key {key}" if key else ""
            raise FetchError(
                f"cannot use client_cert {cert}{with_key}: {_ssl_reason(err)} (not PEM, a key "
                "that does not match the certificate, or a wrong or missing client_key_password)"
            ) from None
    return context


def _tls_problem(text: str, host: str) -> str | None:
    """A TLS failure in words an admin can act on, or None."""
    upper = text.upper()
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        why = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text.partition("certificate verify failed:")[2])
        return (
            f"the TLS certificate of {host} is not trusted ({why.strip() or 'verify failed'}); "
            "set ca_bundle to the CA that issued it"
        )
    if "CERTIFICATE_REQUIRED" in upper:
        return f"{host} requires a TLS client certificate (client_cert)"
    if any(alert in upper for alert in ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")):
        return f"{host} refused the TLS client certificate"
    return None


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
    """One small connection pool per host and transport profile.

    httpcore checks every pooled connection on every request, so one big pool
    for all hosts costs O(connections) per request; a pool per host stays as
    small as the per-host limit. The semaphore (one per host, whatever the
    profiles of the requests) makes the limit exact.
    """

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._tls = httpx2.create_ssl_context()  # loading the CA bundle is slow: once
        self._timeout = httpx2.Timeout(
            settings.read_timeout, connect=settings.connect_timeout, pool=settings.read_timeout
        )
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._pools: dict[_PoolKey, _Pool] = {}
        self._lineage: dict[_PoolKey, _PoolKey] = {}  # without file versions -> current key
        self._contexts: dict[_TlsKey, tuple[tuple[tuple[int, int], ...], ssl.SSLContext]] = {}
        self._building = asyncio.Lock()
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
        pools = list(self._pools.values())
        self._pools.clear()
        self._lineage.clear()
        self._contexts.clear()
        for pool in pools:
            await pool.client.aclose()

    async def _context(self, profile: TransportProfile, *, client: bool = True) -> ssl.SSLContext:
        """The SSL context of `profile` (its trust only, for a proxy, when not
        `client`), built once per distinct profile and file version."""
        cert = profile.client_cert if client else None
        if profile.ca_bundle is None and cert is None:
            return self._tls
        key: _TlsKey = (
            profile.ca_bundle,
            cert,
            profile.client_key if client else None,
            profile.client_key_password if client else None,
        )
        cached = self._contexts.get(key)
        if cached is not None and cached[0] == profile.files_version:
            return cached[1]
        context = await asyncio.to_thread(_load_tls, *key)
        self._contexts[key] = (profile.files_version, context)
        return context

    async def _pool(
        self, origin: str, profile: TransportProfile | None, identity: _Identity | None
    ) -> _Pool:
        key: _PoolKey = (origin, profile, identity)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        async with self._building:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = await self._new_pool(profile, identity)
                # A renewed certificate file retires the pool built on the old one.
                lineage: _PoolKey = (origin, profile.lineage() if profile else None, identity)
                previous = self._lineage.get(lineage)
                self._lineage[lineage] = key
                old = self._pools.pop(previous, None) if previous not in (None, key) else None
                if old is not None:
                    old.retired = True
                    if old.users == 0:
                        await old.client.aclose()
        return pool

    async def _new_pool(
        self, profile: TransportProfile | None, identity: _Identity | None
    ) -> _Pool:
        # A connection-authenticated identity gets one connection (see the module doc).
        connections = 1 if identity else self._settings.per_host
        verify = self._tls if profile is None else await self._context(profile)
        proxy = None
        if profile is not None and profile.proxy:
            auth = None
            if profile.proxy_username is not None:
                auth = (profile.proxy_username, profile.proxy_password or "")
            https = profile.proxy.lower().startswith("https:")
            proxy = httpx2.Proxy(
                profile.proxy,
                auth=auth,
                ssl_context=await self._context(profile, client=False) if https else None,
            )
        client = httpx2.AsyncClient(
            verify=verify,
            proxy=proxy,
            timeout=self._timeout,
            limits=httpx2.Limits(
                max_connections=connections, max_keepalive_connections=connections
            ),
            follow_redirects=True,
            max_redirects=5,
            trust_env=False,
            headers={"User-Agent": self._settings.user_agent},
            # Runs before every request httpx2 sends, redirect hops included.
            event_hooks={"request": [self._check_address]},
        )
        return _Pool(client, asyncio.Lock() if identity else None)

    async def _check_address(self, request: httpx2.Request) -> None:
        """Refuse a request whose host is, or resolves to, a link-local or
        cloud-metadata address, before any connection is made; through a
        proxy, the proxy's address too.

        A name's addresses are looked up once a minute at most (_RESOLVED_TTL).
        Known limit (DNS rebinding): the name is resolved here and again by
        httpcore2 when it connects, so a name whose answer changes in between
        can still reach a refused address. Closing that gap needs connecting
        to the checked address itself (a custom network backend)."""
        guard = request.extensions.get(_GUARD)
        if isinstance(guard, _Guard) and guard.allow_link_local:
            return
        settings = guard if isinstance(guard, _Guard) else None
        proxy = settings.proxy if settings else None
        if proxy is not None:
            await self._check_host(request.url, settings, proxy)
        await self._check_host(request.url, settings, None, proxied=proxy is not None)

    async def _check_host(
        self,
        url: httpx2.URL,
        guard: _Guard | None,
        proxy: httpx2.URL | None,
        *,
        proxied: bool = False,
    ) -> None:
        """Check the host of `url`, or of `proxy` when given. A target name
        that does not resolve here is the proxy's to resolve when `proxied`."""
        checked = proxy or url
        host = checked.host  # for messages: the name as written (Unicode)
        name = checked.raw_host.decode("ascii")  # IDNA-encoded, what getaddrinfo wants
        via = f" through proxy {redact(str(proxy))}" if proxy else ""
        literal = _ip_literal(name)
        if literal:
            addresses = [name]
        elif (cached := self._resolved.get(name)) and cached[0] > time.monotonic():
            addresses = cached[1]
        else:
            try:
                addresses = await asyncio.wait_for(resolve(name), self._settings.connect_timeout)
            except TimeoutError:
                if proxied:
                    return
                raise FetchError(
                    f"timed out fetching {redact(str(url))}{via} (resolving {host})"
                ) from None
            except (OSError, UnicodeError) as err:
                if proxied:
                    return
                reason = getattr(err, "strerror", None) or type(err).__name__
                raise FetchError(
                    f"cannot fetch {redact(str(url))}{via}: cannot resolve {host}: {reason}"
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
            if guard is not None and url != guard.start:
                hop = f" (redirected from {redact(str(guard.start))})"
            raise FetchError(
                f"refused to fetch {redact(str(url))}{hop}{via}: {what} a {kind} address; "
                f"{ALLOW_HINT}"
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
        transport: TransportProfile | None = None,
    ) -> FetchResult:
        """GET `url`. `auth` is sent to the URL's origin only, never after a
        redirect to another one. Link-local and cloud-metadata hosts are
        refused, at every hop, unless `allow_link_local`. `transport` says
        whom to trust, which client certificate to show and which proxy to use."""
        return await self.request(
            "GET",
            url,
            etag=etag,
            last_modified=last_modified,
            headers=headers,
            auth=auth,
            allow_link_local=allow_link_local,
            transport=transport,
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
        transport: TransportProfile | None = None,
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
        origin = f"{target.scheme}://{target.host}:{target.port}"
        slot = self._slots.get(origin)
        if slot is None:
            slot = self._slots[origin] = asyncio.Semaphore(self._settings.per_host)
        if transport == TransportProfile():
            transport = None
        pool = await self._pool(origin, transport, _connection_identity(auth))
        proxy = httpx2.URL(transport.proxy) if transport and transport.proxy else None
        via = f" through proxy {redact(str(proxy))}" if proxy else ""
        exclusive: AbstractAsyncContextManager[Any] = pool.lock or contextlib.nullcontext()
        total = self._settings.total_timeout
        pool.users += 1
        try:
            async with exclusive, slot:  # waiting for a slot is not the fetch's time
                deadline = asyncio.timeout(total)
                try:
                    async with (
                        deadline,
                        pool.client.stream(
                            method,
                            target,
                            params=params,
                            json=json,
                            headers=request_headers,
                            auth=_auth(auth),
                            extensions={_GUARD: _Guard(allow_link_local, target, proxy)},
                        ) as resp,
                    ):
                        return await self._read(url, resp, via)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise FetchError(
                        f"timed out fetching {redact(url)}{via}: "
                        f"no complete response within {total:g}s"
                    ) from None
                except httpx2.TimeoutException as err:
                    raise FetchError(
                        f"timed out fetching {redact(url)}{via} ({type(err).__name__})"
                    ) from err
                except httpx2.TooManyRedirects as err:
                    raise FetchError(f"too many redirects fetching {redact(url)}") from err
                except (httpx2.HTTPError, ssl.SSLError) as err:
                    # ssl.SSLError: a TLS 1.3 alert (a refused client certificate)
                    # arrives after the handshake, as the response is read.
                    text = str(err)
                    if not text:
                        text = f"the connection was closed ({type(err).__name__})"
                        if target.scheme == "https" and not (transport and transport.client_cert):
                            # A TLS 1.3 server refusing a missing certificate may just hang up.
                            text += (
                                f"; if {target.host} requires a client certificate, set client_cert"
                            )
                    reason = _tls_problem(text, target.host) or text
                    raise FetchError(f"cannot fetch {redact(url)}{via}: {reason}") from err
        finally:
            pool.users -= 1
            if pool.retired and pool.users == 0:
                await pool.client.aclose()

    async def _read(self, url: str, resp: httpx2.Response, via: str = "") -> FetchResult:
        moved = None
        hops = [r for r in resp.history if r.status_code != 401]  # not a handshake's rounds
        if hops and all(r.status_code in PERMANENT for r in hops):
            moved = str(resp.url)
        now = datetime.now(UTC)
        if resp.status_code == 410:
            raise GoneError(f"HTTP 410 Gone from {redact(url)}: the feed was removed")
        if resp.status_code >= 400:
            retry = retry_after_seconds(resp.headers.get("Retry-After"), now)
            reason = f" {resp.reason_phrase}" if resp.reason_phrase else ""
            by = via if resp.status_code == 407 else ""  # the proxy's answer, not the host's
            raise FetchError(
                f"HTTP {resp.status_code}{reason} from {redact(url)}{by}", retry_after=retry
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
