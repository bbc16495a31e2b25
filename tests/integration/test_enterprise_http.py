"""Enterprise HTTP on the shared fetcher, against loopback servers.

What runs for real here: NTLM and Negotiate handshakes against pyspnego's own
server side (NTLM users from an NTLM_USER_FILE), NTLM channel binding over
TLS, TLS client certificates and a private CA (trustme), and an HTTP proxy
(absolute-form GET and CONNECT, with basic proxy auth).

What cannot run here is tested at the boundary: there is no Kerberos KDC, so
Negotiate is proven by the token the client sends (SPNEGO offering NTLM) and
by a Negotiate handshake that falls back to NTLM; a Kerberos ticket exchange
itself is pyspnego's and GSSAPI's, not ours.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import spnego
import trustme
from cryptography.hazmat.primitives import serialization
from spnego.channel_bindings import GssChannelBindings

from aggregator.config import load_config
from aggregator.connector import HttpSettings, PollContext, Resources
from aggregator.exceptions import FetchError
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from connectors.feed import FeedOptions
from connectors.http import Fetcher, NtlmAuth, TransportProfile
from connectors.httpsource import request_args
from tests.support import FeedServer, feed_source, rss, write_config

pytestmark = pytest.mark.integration

DOMAIN, USER = "CORP", "alice"
PASSWORD = "Ntlm-Pa55-from-the-vault"
KEY_PASSWORD = "key-pa55-0f-the-cert"
PROXY_PASSWORD = "pr0xy-pa55-w0rd"
FORBIDDEN = (
    PASSWORD,
    KEY_PASSWORD,
    PROXY_PASSWORD,
    base64.b64encode(f"proxy-user:{PROXY_PASSWORD}".encode()).decode(),
)
FEED = rss([{"guid": "e1", "title": "Behind the domain login"}]).encode()
SETTINGS = HttpSettings(connect_timeout=2, read_timeout=2)
SPNEGO_OID = bytes.fromhex("06062b0601050502")  # 1.3.6.1.5.5.2
NTLM_OID = bytes.fromhex("060a2b0601040182370202 0a".replace(" ", ""))  # 1.3.6.1.4.1.311.2.2.10
KERBEROS_OIDS = (bytes.fromhex("2a864886f712010202"), bytes.fromhex("2a864882f712010202"))


# --- servers ----------------------------------------------------------------


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up (refused certificates) are what some tests do


class EnterpriseServer:
    """Serves FEED on every path. With `scheme` ("NTLM" or "Negotiate") it
    authenticates like IIS: pyspnego's server side runs the handshake, and a
    connection that completed it stays authenticated. With `tls` it serves
    HTTPS (the context decides whether a client certificate is required).

    Records (connection number, path, Authorization) for every request, the
    principals that authenticated, and each connection's client certificate."""

    def __init__(
        self,
        scheme: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        bindings: GssChannelBindings | None = None,
        offer: tuple[str, ...] | None = None,
        persist: bool = True,
    ) -> None:
        self.scheme = scheme
        self.persist = persist
        self.offer = offer or ((scheme,) if scheme else ())
        self.bindings = bindings
        self.seen: list[tuple[int, str, str | None]] = []
        self.redirects: dict[str, str] = {}
        self.principals: list[str] = []
        self.client_certs: list[object] = []
        self.failures: list[str] = []
        lock = threading.Lock()
        numbers = itertools.count(1)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                if tls is not None:
                    self.request = _handshake(tls, self.request)
                    with lock:
                        server.client_certs.append(self.request.getpeercert())
                super().setup()
                self.number = next(numbers)
                self.context: spnego.ContextProxy | None = None
                self.user: str | None = None

            def finish(self) -> None:
                super().finish()
                if tls is not None:
                    self.request.close()  # the TLS socket; the server closes only the plain one

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                with lock:
                    server.seen.append((self.number, self.path, auth))
                if self.path in server.redirects:  # anonymous, like a moved page
                    self._send(301, b"", [("Location", server.redirects[self.path])])
                    return
                final: dict[str, str] = {}
                if server.scheme and self.user is None:
                    scheme, _, token = (auth or "").partition(" ")
                    if scheme != server.scheme or not token:
                        self.context = None
                        self._send(401, b"log in", [("WWW-Authenticate", s) for s in server.offer])
                        return
                    if self.context is None:
                        self.context = spnego.server(
                            protocol=scheme.lower(), channel_bindings=server.bindings
                        )
                    try:
                        out = self.context.step(base64.b64decode(token))
                    except Exception as err:  # SpnegoError, or a token out of place
                        with lock:
                            server.failures.append(f"{type(err).__name__}: {err}")
                        self.context = None
                        self._send(401, b"denied", [("WWW-Authenticate", server.scheme)])
                        return
                    encoded = f"{scheme} {base64.b64encode(out).decode()}" if out else ""
                    if not self.context.complete:
                        self._send(401, b"go on", [("WWW-Authenticate", encoded)])
                        return
                    principal = str(self.context.client_principal)
                    self.context = None
                    self.user = principal if server.persist else None
                    with lock:
                        server.principals.append(principal)
                    if encoded:  # SPNEGO's last word (mechListMIC): mutual authentication
                        final["WWW-Authenticate"] = encoded
                self._send(200, FEED, [("Content-Type", "application/rss+xml"), *final.items()])

            def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.scheme_of_url = "http" if tls is None else "https"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/f.xml") -> str:
        return f"{self.scheme_of_url}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> EnterpriseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handshake(tls: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """The server side of a TLS handshake, in the connection's own thread. On
    failure (no client certificate) the client's pending bytes are read
    before closing, so its TCP stack delivers the alert instead of a reset."""
    sock.settimeout(5)
    wrapped = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        wrapped.do_handshake()
    except (ssl.SSLError, OSError):
        with contextlib.suppress(OSError):
            wrapped.shutdown(socket.SHUT_WR)
            for _ in range(100):  # until the client hangs up
                if not wrapped.recv(4096):
                    break
        wrapped.close()
        raise
    return wrapped


class ForwardProxy:
    """A small HTTP proxy: absolute-form GET is forwarded, CONNECT tunnels.
    Requires basic `credentials` when set; `upstream` sends every request to
    one address whatever the name asked for (a name only the proxy knows).
    Records (method, target, Proxy-Authorization)."""

    def __init__(
        self, credentials: tuple[str, str] | None = None, upstream: tuple[str, int] | None = None
    ) -> None:
        self.expected = None
        if credentials:
            self.expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.upstream = upstream
        self.seen: list[tuple[str, str, str | None]] = []
        self.stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _allowed(self) -> bool:
                auth = self.headers.get("Proxy-Authorization")
                proxy.seen.append((self.command, self.path, auth))
                if proxy.expected is None or auth == proxy.expected:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self) -> None:
                if not self._allowed():
                    return
                parts = urlsplit(self.path)
                host, port = proxy.upstream or (parts.hostname or "", parts.port or 80)
                upstream = http.client.HTTPConnection(host, port, timeout=5)
                try:
                    upstream.request("GET", parts.path or "/", headers={"Host": parts.netloc})
                    answer = upstream.getresponse()
                    body = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type") or "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_CONNECT(self) -> None:
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                target = proxy.upstream or (host, int(port))
                with socket.create_connection(target, timeout=5) as upstream:
                    self.send_response(200, "Connection established")
                    self.end_headers()
                    self.close_connection = True
                    _pipe(self.connection, upstream, proxy.stopping)

        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _pipe(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or 30 s, or the proxy stops)."""
    end = time.monotonic() + 30
    while not stopping.is_set() and time.monotonic() < end:
        readable, _, _ = select.select([a, b], [], [], 0.2)
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


# --- fixtures and helpers -----------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: Path
    client_cert: Path
    client_key: Path
    encrypted_key: Path

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context

    def server_bindings(self) -> GssChannelBindings:
        """What a server computes from its own certificate (RFC 5929; ECDSA-SHA256)."""
        pem = self.server.cert_chain_pems[0].bytes()
        der = ssl.PEM_cert_to_DER_cert(pem.decode())
        digest = hashlib.sha256(der).digest()
        return GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("alice@corp.example")
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(where / "client.pem"))
    client.private_key_pem.write_to_path(str(where / "client.key"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    )
    (where / "client-encrypted.key").write_bytes(encrypted)
    return Pki(
        ca,
        server,
        where / "ca.pem",
        where / "client.pem",
        where / "client.key",
        where / "client-encrypted.key",
    )


@pytest.fixture
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pyspnego's NTLM account file (DOMAIN:USER:PASSWORD lines), which its
    server side reads to check answers. Its client side reads it too, as the
    process's own NTLM credentials, when given no user name."""
    users = tmp_path / "ntlm-users"
    users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    monkeypatch.setenv("TIDINGS_TEST_NTLM_PASSWORD", PASSWORD)
    return users


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx2, httpcore2 and spnego too: none may show a secret


async def poll(config_path: Path) -> tuple[Store, PollOutcome]:
    config = load_config(config_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)
    try:
        [outcome] = await poller.poll_now()
    finally:
        await poller.aclose()
    return store, outcome


def source(url: str, *lines: str, sid: str = "intranet") -> str:
    return feed_source(sid, url) + "".join(f"{line}\n" for line in lines)


def assert_no_secret(store: Store, outcome: PollOutcome, caplog: pytest.LogCaptureFixture) -> None:
    errors = [status.last_error or "" for status in store.source_statuses(viewer=None)]
    for text in (caplog.text, outcome.error or "", *errors):
        for secret in FORBIDDEN:
            assert secret not in text


NTLM_LOGIN = (
    'auth = "ntlm"',
    f"username = '{DOMAIN}\\{USER}'",
    'password = "env:TIDINGS_TEST_NTLM_PASSWORD"',
)


def poll_context(tmp_path: Path) -> PollContext:
    async def run_cpu(fn: object, *args: object) -> object:
        raise AssertionError("not used")

    return PollContext("intranet", datetime.now(UTC), Resources(), run_cpu, base_dir=tmp_path)


# --- NTLM and Negotiate ----------------------------------------------------------


async def test_an_ntlm_handshake_with_the_right_password_polls_the_feed(
    ntlm_users: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with EnterpriseServer("NTLM") as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *NTLM_LOGIN)))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert server.principals == [f"{DOMAIN}\\{USER}"]
    # Challenge, negotiate (Type 1), authenticate (Type 3): one connection throughout.
    [(c1, _, none), (c2, _, type1), (c3, _, type3)] = server.seen
    assert c1 == c2 == c3 and none is None
    assert type1 and type3 and type1.startswith("NTLM ") and type3.startswith("NTLM ")
    assert base64.b64decode(type1.split()[1])[8:9] == b"\x01"  # NTLMSSP message type 1
    assert base64.b64decode(type3.split()[1])[8:9] == b"\x03"
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_a_wrong_ntlm_password_is_a_clear_error_without_the_password(
    ntlm_users: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Not-" + PASSWORD
    monkeypatch.setenv("TIDINGS_TEST_NTLM_PASSWORD", wrong)
    with EnterpriseServer("NTLM") as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *NTLM_LOGIN)))
    assert outcome.error == (
        f"NTLM authentication to 127.0.0.1 as {DOMAIN}\\{USER} was refused (HTTP 401 from "
        f"{server.url()}): wrong user name or password, or no access to this URL"
    )
    assert server.principals == [] and server.failures  # the server saw a wrong answer
    assert "source intranet" in caplog.text  # the poller's log line names the source
    for text in (caplog.text, outcome.error):
        assert wrong not in text
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_a_server_that_does_not_offer_ntlm_says_what_it_offers(
    ntlm_users: Path, tmp_path: Path
) -> None:
    with EnterpriseServer("NTLM", offer=('Basic realm="intranet"',)) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *NTLM_LOGIN)))
    assert outcome.error == (
        f"HTTP 401 from {server.url()}: the server does not offer NTLM authentication "
        "(it offers basic)"
    )
    assert [auth for _, _, auth in server.seen] == [None]
    store.close()


async def test_an_ntlm_authenticated_connection_is_never_shared(
    ntlm_users: Path, tmp_path: Path
) -> None:
    """Like IIS, the server keeps a connection authenticated once the
    handshake is done. Another NTLM request of the same user may reuse it;
    an anonymous request to the same host must not ride on it."""
    login = NtlmAuth(f"{DOMAIN}\\{USER}", PASSWORD)
    with EnterpriseServer("NTLM") as server:
        async with Fetcher.open(SETTINGS) as fetcher:
            assert (await fetcher.get(server.url(), auth=login)).content == FEED
            again = await fetcher.get(server.url("/again.xml"), auth=login)
            assert again.content == FEED
            with pytest.raises(FetchError, match="HTTP 401"):
                await fetcher.get(server.url("/anonymous.xml"))
    handshake, reused, anonymous = server.seen[:3], server.seen[3], server.seen[4]
    assert reused == (handshake[0][0], "/again.xml", None)  # no second handshake
    assert anonymous[0] != handshake[0][0] and anonymous[2] is None
    assert server.principals == [f"{DOMAIN}\\{USER}"]


async def test_a_permanent_redirect_before_the_handshake_is_still_reported(
    ntlm_users: Path,
) -> None:
    login = NtlmAuth(f"{DOMAIN}\\{USER}", PASSWORD)
    with EnterpriseServer("NTLM") as server:
        server.redirects["/old.xml"] = "/f.xml"
        async with Fetcher.open(SETTINGS) as fetcher:
            got = await fetcher.get(server.url("/old.xml"), auth=login)
    assert got.content == FEED and got.permanent_redirect == server.url()
    # The handshake answered the URL that asked for it, not the old one again.
    assert [path for _, path, _ in server.seen] == ["/old.xml", "/f.xml", "/f.xml", "/f.xml"]


async def test_a_wrong_password_never_rides_on_a_connection_of_the_same_user(
    ntlm_users: Path,
) -> None:
    with EnterpriseServer("NTLM") as server:
        async with Fetcher.open(SETTINGS) as fetcher:
            await fetcher.get(server.url(), auth=NtlmAuth(f"{DOMAIN}\\{USER}", PASSWORD))
            with pytest.raises(FetchError, match="was refused"):
                await fetcher.get(server.url(), auth=NtlmAuth(f"{DOMAIN}\\{USER}", "wrong"))


async def test_concurrent_ntlm_polls_each_answer_on_their_own_connection(
    ntlm_users: Path,
) -> None:
    """Type 3 must go on the connection that got the challenge, even with
    many requests in flight for the same user, against a server that does not
    keep connections authenticated. (Without the per-identity lock this fails
    now and then, not always: a race.)"""
    import asyncio

    login = NtlmAuth(f"{DOMAIN}\\{USER}", PASSWORD)
    with EnterpriseServer("NTLM", persist=False) as server:
        async with Fetcher.open(SETTINGS) as fetcher:
            results = await asyncio.gather(
                *(fetcher.get(server.url(f"/{n}.xml"), auth=login) for n in range(8))
            )
    assert all(result.content == FEED for result in results)
    assert server.failures == [] and len(server.principals) == 8


async def test_negotiate_without_a_kdc_offers_ntlm_in_spnego_and_completes(
    ntlm_users: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No KDC here: the client's first token must be a SPNEGO NegTokenInit
    offering NTLM, and the whole handshake (with the server's closing
    mechListMIC, checked by the client) must succeed against pyspnego's
    Negotiate acceptor."""
    login = (
        'auth = "negotiate"',
        f"username = '{DOMAIN}\\{USER}'",
        'password = "env:TIDINGS_TEST_NTLM_PASSWORD"',
    )
    with EnterpriseServer("Negotiate") as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *login)))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert server.principals == [f"{DOMAIN}\\{USER}"]
    first = server.seen[1][2]
    assert first is not None and first.startswith("Negotiate ")
    token = base64.b64decode(first.split()[1])
    assert token[:1] == b"\x60" and SPNEGO_OID in token  # GSS-API InitialContextToken, SPNEGO
    assert NTLM_OID in token and b"NTLMSSP\x00\x01" in token  # NTLM offered, Type 1 inside
    assert not any(oid in token for oid in KERBEROS_OIDS)  # no Kerberos without a KDC
    assert len({number for number, _, _ in server.seen}) == 1
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_negotiate_answers_a_server_that_only_offers_ntlm(
    ntlm_users: Path, tmp_path: Path
) -> None:
    login = (
        'auth = "negotiate"',
        f"username = '{DOMAIN}\\{USER}'",
        'password = "env:TIDINGS_TEST_NTLM_PASSWORD"',
    )
    with EnterpriseServer("NTLM") as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *login)))
    assert outcome.error is None
    assert [auth.split()[0] for _, _, auth in server.seen if auth] == ["NTLM", "NTLM"]
    store.close()


async def test_negotiate_without_a_user_uses_the_process_credentials(
    ntlm_users: Path, tmp_path: Path
) -> None:
    """With neither username nor password, the process's own credentials
    are used: here pyspnego's NTLM credential file (the NTLM counterpart of
    a Kerberos ticket cache, which would come first if there were a KDC)."""
    with EnterpriseServer("Negotiate") as server:
        store, outcome = await poll(
            write_config(tmp_path, source(server.url(), 'auth = "negotiate"'))
        )
    assert outcome.error is None
    assert server.principals == [f"{DOMAIN}\\{USER}"]
    store.close()


async def test_negotiate_without_any_credentials_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path}/no-such-ccache")
    with EnterpriseServer("Negotiate") as server:
        store, outcome = await poll(
            write_config(tmp_path, source(server.url(), 'auth = "negotiate"'))
        )
    assert outcome.error is not None
    assert outcome.error.startswith(
        "Negotiate authentication to 127.0.0.1 with this process's own credentials failed: "
    )
    assert server.principals == []
    store.close()


async def test_ntlm_over_tls_carries_the_channel_binding(
    ntlm_users: Path, pki: Pki, tmp_path: Path
) -> None:
    """A server that checks channel bindings (Extended Protection) accepts
    the client's answer only if it is bound to the server's certificate."""
    tls = pki.server_context()
    ca = f'ca_bundle = "{pki.ca_file}"'
    with EnterpriseServer("NTLM", tls=tls, bindings=pki.server_bindings()) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *NTLM_LOGIN, ca)))
        assert outcome.error is None and server.principals == [f"{DOMAIN}\\{USER}"]
        store.close()
    # A server expecting another certificate's binding (a relay) refuses the same answer.
    other = GssChannelBindings(application_data=b"tls-server-end-point:" + b"\x00" * 32)
    with EnterpriseServer("NTLM", tls=pki.server_context(), bindings=other) as relay:
        store, outcome = await poll(
            write_config(tmp_path, source(relay.url(), *NTLM_LOGIN, ca, sid="relayed"))
        )
    assert outcome.error is not None and "was refused" in outcome.error
    assert relay.principals == [] and "bindings do not match" in " ".join(relay.failures)
    store.close()


# --- client certificates and CA bundles -----------------------------------------------


async def test_a_client_certificate_and_a_ca_bundle_relative_to_the_config(
    pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "tls").mkdir()
    for file in (pki.ca_file, pki.client_cert, pki.client_key):
        (tmp_path / "tls" / file.name).write_bytes(file.read_bytes())
    lines = (
        'ca_bundle = "tls/ca.pem"',
        'client_cert = "tls/client.pem"',
        'client_key = "tls/client.key"',
    )
    with EnterpriseServer(tls=pki.server_context(require_client_cert=True)) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines)))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    [cert] = server.client_certs
    assert ("email", "alice@corp.example") in cert["subjectAltName"]  # type: ignore[index]
    store.close()


async def test_an_encrypted_client_key_with_its_password_reference(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_KEY_PASSWORD", KEY_PASSWORD)
    lines = (
        f'ca_bundle = "{pki.ca_file}"',
        f'client_cert = "{pki.client_cert}"',
        f'client_key = "{pki.encrypted_key}"',
        'client_key_password = "env:TIDINGS_TEST_KEY_PASSWORD"',
    )
    with EnterpriseServer(tls=pki.server_context(require_client_cert=True)) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines)))
        assert outcome.error is None
        assert_no_secret(store, outcome, caplog)
        store.close()
        monkeypatch.setenv("TIDINGS_TEST_KEY_PASSWORD", "not-" + KEY_PASSWORD)
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines, sid="b")))
    assert outcome.error is not None
    assert outcome.error.startswith(
        f"cannot use client_cert {pki.client_cert} with client_key {pki.encrypted_key}: "
    )
    assert "client_key_password" in outcome.error and KEY_PASSWORD not in caplog.text
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_without_the_client_certificate_the_error_says_one_is_required(
    pki: Pki, tmp_path: Path
) -> None:
    with EnterpriseServer(tls=pki.server_context(require_client_cert=True)) as server:
        store, outcome = await poll(
            write_config(tmp_path, source(server.url(), f'ca_bundle = "{pki.ca_file}"'))
        )
    assert outcome.error == (
        f"cannot fetch {server.url()}: 127.0.0.1 requires a TLS client certificate (client_cert)"
    )
    store.close()


async def test_the_default_trust_store_does_not_trust_a_private_ca(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    lines = (f'client_cert = "{pki.client_cert}"', f'client_key = "{pki.client_key}"')
    with EnterpriseServer(tls=pki.server_context(require_client_cert=True)) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines)))
    assert outcome.error is not None
    assert outcome.error.startswith(
        f"cannot fetch {server.url()}: the TLS certificate of 127.0.0.1 is not trusted ("
    )
    assert outcome.error.endswith("; set ca_bundle to the CA that issued it")
    assert server.seen == []
    store.close()


async def test_a_missing_certificate_file_names_the_option_and_the_source(
    pki: Pki, tmp_path: Path
) -> None:
    lines = (f'ca_bundle = "{pki.ca_file}"', 'client_cert = "tls/absent.pem"')
    with EnterpriseServer(tls=pki.server_context()) as server:
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines)))
    assert outcome.error == (
        f"client_cert {tmp_path / 'tls' / 'absent.pem'} of source intranet: no such file"
    )
    assert server.seen == []
    store.close()


async def test_a_renewed_client_certificate_is_used_without_a_restart(
    pki: Pki, tmp_path: Path
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(pki.client_cert.read_bytes())
    key.write_bytes(pki.client_key.read_bytes())
    options = FeedOptions.model_validate(
        {"url": "https://127.0.0.1/", "ca_bundle": str(pki.ca_file), "client_cert": "client.pem"}
        | {"client_key": "client.key"}
    )
    ctx = poll_context(tmp_path)
    with EnterpriseServer(tls=pki.server_context(require_client_cert=True)) as server:
        async with Fetcher.open(SETTINGS) as fetcher:
            await fetcher.get(server.url(), **await request_args(options, ctx))
            renewed = pki.ca.issue_cert("alice-renewed@corp.example")
            renewed.cert_chain_pems[0].write_to_path(str(cert))
            renewed.private_key_pem.write_to_path(str(key))
            await fetcher.get(server.url(), **await request_args(options, ctx))
    first, second = (c["subjectAltName"] for c in server.client_certs)  # type: ignore[index]
    assert first == (("email", "alice@corp.example"),)
    assert second == (("email", "alice-renewed@corp.example"),)


# --- proxies ----------------------------------------------------------------------------


PROXY_LOGIN = ('proxy_username = "proxy-user"', 'proxy_password = "env:TIDINGS_TEST_PROXY"')


async def test_a_feed_through_an_authenticating_proxy(
    feed_server: FeedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_PROXY", PROXY_PASSWORD)
    feed_server.put("/f.xml", FEED)
    with ForwardProxy(("proxy-user", PROXY_PASSWORD)) as proxy:
        lines = (f'proxy = "{proxy.url}"', *PROXY_LOGIN)
        store, outcome = await poll(
            write_config(tmp_path, source(feed_server.url("/f.xml"), *lines))
        )
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert proxy.seen == [("GET", feed_server.url("/f.xml"), proxy.expected)]
    assert feed_server.hits("/f.xml") == 1
    [(_, headers)] = feed_server.requests
    assert "proxy-authorization" not in {name.lower() for name in headers}
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_a_wrong_proxy_password_is_the_proxys_407(
    feed_server: FeedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_PROXY", "not-" + PROXY_PASSWORD)
    with ForwardProxy(("proxy-user", PROXY_PASSWORD)) as proxy:
        lines = (f'proxy = "{proxy.url}"', *PROXY_LOGIN)
        store, outcome = await poll(
            write_config(tmp_path, source(feed_server.url("/f.xml"), *lines))
        )
    assert outcome.error == (
        f"HTTP 407 Proxy Authentication Required from {feed_server.url('/f.xml')} "
        f"through proxy {proxy.url}"
    )
    assert feed_server.requests == []
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_https_through_a_proxy_tunnel_with_a_client_certificate(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_PROXY", PROXY_PASSWORD)
    tls = pki.server_context(require_client_cert=True)
    with EnterpriseServer(tls=tls) as server, ForwardProxy(("proxy-user", PROXY_PASSWORD)) as proxy:
        lines = (
            f'proxy = "{proxy.url}"',
            *PROXY_LOGIN,
            f'ca_bundle = "{pki.ca_file}"',
            f'client_cert = "{pki.client_cert}"',
            f'client_key = "{pki.client_key}"',
        )
        store, outcome = await poll(write_config(tmp_path, source(server.url(), *lines)))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert proxy.seen == [("CONNECT", f"127.0.0.1:{server.port}", proxy.expected)]
    assert len(server.client_certs) == 1  # the certificate went to the host, inside the tunnel
    store.close()


async def test_a_name_only_the_proxy_resolves_is_left_to_it(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/f.xml", FEED)
    url = "http://feeds.intranet.invalid/f.xml"  # .invalid never resolves here
    with ForwardProxy(upstream=("127.0.0.1", feed_server.port)) as proxy:
        store, outcome = await poll(write_config(tmp_path, source(url, f'proxy = "{proxy.url}"')))
        assert outcome.error is None and proxy.seen == [("GET", url, None)]
        store.close()
        store, outcome = await poll(write_config(tmp_path, source(url, sid="direct")))
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot fetch {url}: cannot resolve feeds.intranet.invalid")
    store.close()


async def test_link_local_stays_refused_through_a_proxy(tmp_path: Path) -> None:
    with ForwardProxy() as proxy:
        target = "http://169.254.169.254/latest/meta-data/"
        store, outcome = await poll(
            write_config(tmp_path, source(target, f'proxy = "{proxy.url}"'))
        )
        assert outcome.error is not None and outcome.error.startswith(
            f"refused to fetch {target}: 169.254.169.254 is a cloud-metadata address"
        )
        store.close()
        # The proxy itself on a link-local address: refused before connecting.
        store, outcome = await poll(
            write_config(
                tmp_path,
                source("http://127.0.0.1:9/f.xml", 'proxy = "http://169.254.0.9:3128"', sid="b"),
            )
        )
        assert outcome.error is not None and outcome.error.startswith(
            "refused to fetch http://127.0.0.1:9/f.xml through proxy http://169.254.0.9:3128: "
            "169.254.0.9 is a link-local address"
        )
        store.close()
    assert proxy.seen == []


async def test_profiles_never_share_a_connection(
    pki: Pki, feed_server: FeedServer, tmp_path: Path
) -> None:
    """The same URL through a proxy and directly: two pools, and the direct
    request does not go through the proxy's connection."""
    feed_server.put("/f.xml", FEED)
    with ForwardProxy() as proxy:
        async with Fetcher.open(SETTINGS) as fetcher:
            via = TransportProfile(proxy=proxy.url)
            await fetcher.get(feed_server.url("/f.xml"), transport=via)
            await fetcher.get(feed_server.url("/f.xml"))
            await fetcher.get(feed_server.url("/f.xml"), transport=via)
    assert len(proxy.seen) == 2 and feed_server.hits("/f.xml") == 3
